#!/usr/bin/env bash
# The steps of one device session, in order, each logged with its wall time (run by h200_campaign.sh start).
#   bash benchmarks/device/h200_steps.sh router,throughput,repair
# router:     benchmarks/router_frontier.py on the committed H200 labels and programs, every held-out item, decision
#             latency on a quiet GPU                                                       -> $RUN/router-frontier
# throughput: benchmarks/eval_throughput.py, Qwen2.5-Coder-0.5B Q4_K_M, P = 32/64 ($THROUGHPUT_P), servers x slots
#             1xP, Rx16, Rx8, Rx4, Rx8 with backend sampling ($THROUGHPUT_LAYOUTS)          -> $RUN/eval-throughput
# throughput-gpus: the same on every visible GPU: servers on GPU 0 alone vs spread over all (a 2-GPU machine)
#                                                                                              -> $RUN/eval-throughput-gpus
# repair:     benchmarks/gpu_campaign.py --stages swarm,repair for each of $REPAIR_QUANTS (default Q3_K_M; with
#             as many GPUs as quants, one per GPU at once, else one after the other)  -> $RUN/<quant>/ (repair/, meta.json)
#             after benchmarks/device/cudnn_sdpa_probe.py (NaN attention gradients through cuDNN?) -> $RUN/cudnn_sdpa_probe.json
# campaign:   benchmarks/gpu_campaign.py with $CAMPAIGN_ARGS (all stages by default)      -> $RUN
# serving:    benchmarks/serving_campaign.py --preset h200 (reference swarm, routed held-out tasks at 5 and 20
#             clients through the bus, agents alone, modes, knee sweep)                       -> $RUN/serving
# ladder:     the Qwen2.5-Coder-1.5B quant ladder (F16 from Q4_K_M, Q8_0 .. Q2_K, Q2_K with an imatrix): make,
#             held-out KLD, GSM8K 1000 + MMLU 1000 + HumanEval 164 with every rung at once (--replicas auto),
#             report; the eval's wall time in ladder/timing.json                              -> $RUN/ladder
# serving-x2: benchmarks/serving_campaign.py --preset h200x2 (a 2-GPU machine): the reference swarm one agent per
#             GPU and with the F16 split over both, then on one GPU, routed, 5 and 20 clients -> $RUN/serving-x2
# router-load: benchmarks/router_under_load.py: the served router program's decisions at 1/5/20 threads, through
#             DSPy vs the same requests posted straight to its llama-server (where 400 ms per decision goes)
#                                                                                          -> $RUN/router-under-load
# lanes:      the steps of $LANES ("step:GPU ..."; default "ladder:0 serving:1") at once, each on its own GPU
set -uo pipefail
RUN=${RUN:-/opt/campaign}
LABELS=benchmarks/results/gpu/2026-11-30-h200-campaign
mkdir -p "$RUN"
# the repo is not pip-installed there: scripts import it from here, and the jobs' CLI verbs are found through the
# carried quantswarm.egg-info (entry points) on this path
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f "$RUN/env.txt" ]; then  # what every figure of this run was measured on (the tree's commit: see the README;
                                  # the device's copy of .git is not this session's)
  { date -u; nproc; nvidia-smi --query-gpu=index,name,driver_version,memory.total,power.limit,pci.bus_id --format=csv
    llama-server --version 2>&1 | tail -2; sha256sum "$SWARM_MODELS"/*.gguf 2>/dev/null; } > "$RUN/env.txt" 2>&1
fi
for step in ${1//,/ }; do
  t0=$(date +%s)
  echo "== step $step start $(date -u +%H:%M:%S)"
  case $step in
    router)
      c=/opt/h200-labels && rm -rf $c && mkdir -p $c
      ln -s "$PWD/$LABELS/labels-results" $c/results && ln -s "$PWD/$LABELS/router-programs" $c/router
      cp $LABELS/energy_costs.json $LABELS/meta.json $c/
      python3 benchmarks/router_frontier.py $c --out "$RUN/router-frontier" --strongest qwen15-f16 --program-items 0 ;;
    throughput)  # one GPU: without a pin llama.cpp splits every server's layers over all visible GPUs
      CUDA_VISIBLE_DEVICES=${THROUGHPUT_GPU:-${CUDA_VISIBLE_DEVICES:-0}} python3 benchmarks/eval_throughput.py --model qwen2.5-coder-0.5b-instruct-q4_k_m --data-dir "$QUANTSWARM_DATA" \
        --threads 2 --p ${THROUGHPUT_P:-32,64} --layouts "${THROUGHPUT_LAYOUTS:-1xP,Rx16,Rx8,Rx4,Rx8+bs}" \
        --out "$RUN/eval-throughput" ;;
    throughput-gpus)
      all=$(seq -s. 0 $(( $(nvidia-smi -L | wc -l) - 1 )))
      python3 benchmarks/eval_throughput.py --model qwen2.5-coder-0.5b-instruct-q4_k_m --data-dir "$QUANTSWARM_DATA" \
        --threads 2 --p 32,64,128 --layouts "Rx16@0,Rx16@$all" --out "$RUN/eval-throughput-gpus" ;;
    repair)
      python3 benchmarks/device/cudnn_sdpa_probe.py "$RUN/cudnn_sdpa_probe.json"
      read -ra quants <<< "${REPAIR_QUANTS:-Q3_K_M}"
      # the GPUs this machine lets us use, as CUDA indices (an outer CUDA_VISIBLE_DEVICES is honoured)
      IFS=, read -ra visible <<< "${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $(( $(nvidia-smi --query-gpu=index \
        --format=csv,noheader | wc -l) - 1 )))}"
      pids=(); failed=0
      for i in "${!quants[@]}"; do
        q=${quants[$i]}; mkdir -p "$RUN/$q"
        cmd=(python3 benchmarks/gpu_campaign.py --preset h200 --out "$RUN/$q" --data-dir "$QUANTSWARM_DATA"
             --stages swarm,repair --repair-quant "$q")
        if [ "${#quants[@]}" -le "${#visible[@]}" ]; then  # one quant per GPU, at once
          (set -o pipefail; CUDA_VISIBLE_DEVICES=${visible[$i]} "${cmd[@]}" 2>&1 | sed -u "s/^/[$q] /") & pids+=($!)
        else
          (set -o pipefail; "${cmd[@]}" 2>&1 | sed -u "s/^/[$q] /") || failed=1
        fi
      done
      for p in "${pids[@]}"; do wait "$p" || failed=1; done
      [ "$failed" = 0 ] ;;
    campaign)
      python3 benchmarks/gpu_campaign.py --preset h200 --out "$RUN" --data-dir "$QUANTSWARM_DATA" ${CAMPAIGN_ARGS:-} ;;
    serving)
      CUDA_DEVICE_ORDER=PCI_BUS_ID python3 benchmarks/serving_campaign.py --preset h200 --out "$RUN/serving" \
        --data-dir "$QUANTSWARM_DATA" --allow-code-execution ;;
    ladder)
      L=$RUN/ladder; mkdir -p "$L"
      python3 -m quantswarm.cli eval ladder "$SWARM_MODELS/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" --out /opt/ladder \
        --quants Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K --imatrix Q2_K && cp /opt/ladder/ladder.json "$L/" &&
      python3 -m quantswarm.cli eval kld /opt/ladder --results "$L/results" --n-gpu-layers 99 --chunks 32 --n-ctx 512 &&
      e0=$(date +%s) &&
      # the rungs in $LADDER_GPUS halves (default: every visible GPU), each half's rungs at once on its GPU
      IFS=, read -ra lg <<< "${LADDER_GPUS:-$(seq -s, 0 $(( $(nvidia-smi -L | wc -l) - 1 )))}" &&
      python3 -c "
import json, sys
from pathlib import Path
d = json.loads(Path('/opt/ladder/ladder.json').read_text()); k = int(sys.argv[1])
for i in range(k):
    out = Path(f'/opt/ladder-{i}'); out.mkdir(exist_ok=True)
    rungs = [{**r, 'path': str(Path('/opt/ladder') / r['path'])} for j, r in enumerate(d['rungs']) if j % k == i]
    (out / 'ladder.json').write_text(json.dumps({**d, 'rungs': rungs}))
" "${#lg[@]}" && pids=() && for i in "${!lg[@]}"; do
        CUDA_VISIBLE_DEVICES=${lg[$i]} python3 -m quantswarm.cli eval run /opt/ladder-$i \
          --tasks gsm8k_cot_zeroshot,mmlu_logprob,humaneval_pass1 --task-limit mmlu_logprob=1000 \
          --backend llama-server --parallel 16 --n-ctx 4096 --replicas auto --concurrent-models 4 \
          --allow-code-execution --results "$L/results" --data-dir "$QUANTSWARM_DATA" --no-progress \
          > "$L/eval-$i.log" 2>&1 & pids+=($!)
      done && for p in "${pids[@]}"; do wait "$p"; done &&
      echo "{\"eval_wall_s\": $(( $(date +%s) - e0 )), \"step_wall_s\": $(( $(date +%s) - t0 )), \"gpus\": ${#lg[@]}}" \
        > "$L/timing.json" &&
      python3 -m quantswarm.cli eval report "$L/results" --out "$L/report" > "$L/report.log" 2>&1 ;;
    serving-x2)
      CUDA_DEVICE_ORDER=PCI_BUS_ID python3 benchmarks/serving_campaign.py --preset h200x2 --out "$RUN/serving-x2" \
        --data-dir "$QUANTSWARM_DATA" --allow-code-execution ;;
    router-load)
      P=benchmarks/results/gpu/2026-11-30-h200-campaign
      python3 benchmarks/router_under_load.py --program $P/router-programs/labeled-agent-name@smollm2 \
        --labels $P/labels.jsonl --data-dir "$QUANTSWARM_DATA" --n 100 --concurrency 1,5,20 --out "$RUN/router-under-load" ;;
    lanes)
      pids=(); failed=0
      for lane in ${LANES:-ladder:0 serving:1}; do
        s=${lane%%:*}; g=${lane##*:}
        (set -o pipefail; CUDA_VISIBLE_DEVICES=$g RUN=$RUN bash "$0" "$s" 2>&1 | sed -u "s/^/[$s@$g] /") & pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p" || failed=1; done
      [ "$failed" = 0 ] ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
  echo "== step $step rc $? in $(( $(date +%s) - t0 )) s"
done
