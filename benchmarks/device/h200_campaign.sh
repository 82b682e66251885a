#!/usr/bin/env bash
# The H200 campaign (benchmarks/gpu_campaign.py) on a lent device machine, in calls of the device tool.
# Carried bins (made here by ../shared/device/pack.sh, see benchmarks/device/README.md): .carry/b1 (wheels +
# llama.cpp converter scripts), .carry/b2 (wheels + the prebuilt CUDA llama.cpp tools), .carry/m1..mN (GGUF chunks),
# .carry/dtar/data.tgz (../shared/data: GSM8K, MMLU, HumanEval) and .carry/dtar/nats-server (a copy of this
# machine's /usr/sbin/nats-server, for the bus benches), carried with the start call.
#   bash benchmarks/device/h200_campaign.sh install BIN     # one call per bin, back to back
#   bash benchmarks/device/h200_campaign.sh start [SECONDS] # starts $STEPS (h200_steps.sh; default: campaign) in its
#                                                           # own session and follows it
#   bash benchmarks/device/h200_campaign.sh follow SECONDS  # follows the log until it ends or SECONDS pass, then
#                                                           # brings back what is there so far (as collect)
#   bash benchmarks/device/h200_campaign.sh collect         # results (small files) into $OUT
set -uo pipefail
RUN=/opt/campaign
case "${1:-}" in
  install)
    bin=$2
    bash "$bin/install.sh" "$bin" || exit 1
    if [ -f "$bin/conv.tgz" ]; then mkdir -p /opt/llama-tree && tar xzf "$bin/conv.tgz" -C /opt/llama-tree; fi
    if ls "$bin"/cudabin.txz.part* >/dev/null 2>&1; then
      mkdir -p /opt/llama-bin && cat "$bin"/cudabin.txz.part* | xz -d | tar x -C /opt/llama-bin && ls /opt/llama-bin
    fi ;;
  start)
    eval "$(bash /opt/swarm-install.sh env)"
    export QUANTSWARM_LLAMA_TREE=/opt/llama-tree LLAMA_SERVER_BIN=/opt/llama-bin/llama-server
    mkdir -p /opt/data && tar xzf .carry/dtar/data.tgz -C /opt/data || exit 1
    export PATH=/opt/llama-bin:$PATH QUANTSWARM_DATA=/opt/data
    # the bus benches need nats-server (the device cannot apt-get it): carried beside the data, libc only
    if [ -f .carry/dtar/nats-server ]; then install -m 755 .carry/dtar/nats-server /opt/llama-bin/; fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import dspy, trl, peft, transformers, torch, gguf, optuna; print('imports ok', dspy.__version__, trl.__version__, peft.__version__, transformers.__version__, torch.__version__)" || exit 1
    mkdir -p $RUN
    setsid nohup env RUN=$RUN bash benchmarks/device/h200_steps.sh "${STEPS:-campaign}" > $RUN.log 2>&1 < /dev/null &
    echo $! > $RUN.pid
    bash "$0" follow "${2:-540}" ;;
  follow)
    end=$(( $(date +%s) + ${2:-540} ))
    while [ "$(date +%s)" -lt "$end" ] && kill -0 "$(cat $RUN.pid)" 2>/dev/null; do sleep 20; done
    grep -aE "== |FAILED|labels: |status:|repair: (proof|pairs:|.* failed for|DPO|trained|requantizing)|tok/s = |decisions in|Traceback|Error" $RUN.log | cut -c1-400 | tail -40; tail -c 1200 $RUN.log; echo
    nvidia-smi --query-gpu=memory.used,power.draw --format=csv,noheader
    kill -0 "$(cat $RUN.pid)" 2>/dev/null && echo "STILL RUNNING" || echo "FINISHED"
    if [ -n "${OUT:-}" ]; then bash "$0" collect > /dev/null; fi ;;  # what is there so far comes back each call
  collect)  # in 15 MiB parts (the tool brings back files of at most 16 MiB): cat campaign.tgz.part* | tar xz
    cp $RUN.log "$OUT/campaign.log"
    rm -f "$OUT"/campaign.tgz.part*
    # a live run writes as we read: tar's "file changed" warning is expected (a half-written part is a .tmp file)
    # only files under 20 MB (the KLD reference logits of llama-perplexity run to GBs)
    (cd $RUN && find . -type f -size -20M ! -name '*.gguf' ! -name '*.safetensors' ! -name '*.npz' ! -name '.*.tmp' \
      ! -path '*-hf/*' ! -path '*/dataset/*' ! -path '*/dpo-work/*' | tar czf - --warning=no-file-changed -T -) \
      | split -b 15M - "$OUT/campaign.tgz.part"; ls -la "$OUT" ;;
  *) sed -n 2,9p "$0"; exit 2 ;;
esac
