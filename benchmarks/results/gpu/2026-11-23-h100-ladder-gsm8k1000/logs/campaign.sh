#!/usr/bin/env bash
# Session-2 GPU campaign (issue 7), started with setsid in call 1. Waits for data, models and the tools build, then:
# info -> ladder -> backend-sampling A/B -> [repair A in the background] + GSM8K 1000 on every rung and SmolLM2
# (3 evals at once) -> report -> router compile x3 + eval + latency -> pack. Everything lands in /opt/qs-out.
set -u
O=/opt/qs-out R=/opt/qs-repo L=/opt/qs-ladder RES=/opt/qs-results2 SM=/opt/qs-smol D=/opt/qs-data RO=/opt/qs-router
MODEL=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf STEM=qwen2.5-coder-0.5b-instruct-q4_k_m SMOL=smollm2-135m-instruct-q4_1.gguf
T0=$(cat $O/t_start)
log() { echo "[$(date -u +%T) +$(( $(date +%s) - T0 ))s] $*"; }
pack() {
  mkdir -p /opt/qs-pack && cp $L/ladder.json /opt/qs-pack/ 2>/dev/null
  tar czf $O/results.tar.gz.tmp --exclude='*.kld-base' --exclude='*.gguf' --exclude='*.safetensors' --exclude='adapter' \
    --exclude='hf' --exclude='export' --exclude='models' -C /opt qs-pack qs-results2 qs-smol qs-ab qs-router \
    qs-repo/runs/repair-gpu qs-repo/benchmarks/results/repair-gpu 2>/dev/null
  mv $O/results.tar.gz.tmp $O/results.tar.gz
}
finish() { log "campaign end: $1"; pack; echo "$1" > $O/campaign.done; exit 0; }
wait_for() { local d=$1; shift; until eval "$@"; do sleep 3; done; log "ready: $d"; }
wait_for data "[ -f $D/mmlu/test.jsonl ]"
wait_for "llama.cpp tools" "[ -f $O/tools.done ]"
[ "$(cat $O/tools.done)" = 0 ] || finish "tools build failed"
wait_for models "[ -f /opt/swarm-models/$MODEL ] && [ -f /opt/swarm-models/$SMOL ]"
eval "$(bash /opt/swarm-install.sh env)"
B=$(cat $O/tools-dir)
export QUANTSWARM_CACHE=/opt/qs-cache PATH=$B:$PATH PYTHONPATH=$R:$PYTHONPATH
export LLAMA_SERVER_BIN=$B/llama-server LLAMA_PERPLEXITY_BIN=$B/llama-perplexity
export LLAMA_QUANTIZE_BIN=$B/llama-quantize LLAMA_IMATRIX_BIN=$B/llama-imatrix
cd $R; QS="python3 -m quantswarm.cli"
{ echo "tools dir: $B"; $B/llama-server --version; nvcc --version | tail -2
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
  sha256sum /opt/swarm-models/$MODEL /opt/swarm-models/$SMOL; } > $O/build-info.txt 2>&1
log "info done"; cat $O/build-info.txt
log "ladder"
$QS eval ladder /opt/swarm-models/$MODEL --out $L --quants Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K --imatrix Q2_K || finish "ladder failed"
(cd $L && sha256sum *.gguf) >> $O/build-info.txt
one_rung() {  # QUANT -> /opt/qs-rungs/QUANT/ladder.json (one rung, same files and labels)
  mkdir -p /opt/qs-rungs/$1
  python3 -c "
import json; m=json.load(open('$L/ladder.json')); m['rungs']=[dict(r, path='$L/'+r['path'].split('/')[-1]) for r in m['rungs'] if r['quant']=='$1']
assert m['rungs'], '$1'; json.dump(m, open('/opt/qs-rungs/$1/ladder.json','w'), indent=2)"
}
for q in F16 Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K Q2_K-imat; do one_rung $q; done
log "A/B: llama-server backend sampling off vs on (Q4_K_M, 96 GSM8K items, 16 slots)"
for m in off on; do
  [ $m = on ] && export LLAMA_ARG_BACKEND_SAMPLING=1
  $QS eval run /opt/qs-rungs/Q4_K_M --tasks gsm8k_cot_zeroshot --limit 96 --backend llama-server --parallel 16 \
    --n-ctx 2048 --results /opt/qs-ab/$m --data-dir $D > $O/ab-$m.log 2>&1 || log "A/B $m FAILED: $(tail -3 $O/ab-$m.log)"
  unset LLAMA_ARG_BACKEND_SAMPLING
done
BS=0; python3 .gj2/ab.py /opt/qs-ab/off /opt/qs-ab/on $O/ab.json > $O/ab.txt 2>&1 && grep -q '^BS=1' $O/ab.txt && BS=1
cat $O/ab.txt; cp $O/ab.json /opt/qs-pack/ 2>/dev/null || { mkdir -p /opt/qs-pack; cp $O/ab.json /opt/qs-pack/; }
[ $BS = 1 ] && export LLAMA_ARG_BACKEND_SAMPLING=1; log "backend sampling for the rest: BS=$BS"
wait_for "python binding" "[ -f /opt/swarm-build.done ]"
log "repair A (background): Q2_K of the F16 (from Q4_K_M), default training config"
python3 benchmarks/repair_campaign.py gpu --agent $L/$STEM.F16.gguf > $O/repair-A.log 2>&1 &
REPAIR_PID=$!
log "GSM8K 1000 on every rung + SmolLM2 (GSM8K 1000 + MMLU 1000): 3 evals at once, 16 slots each"
run_eval() {  # NAME ARGS...: one eval process, its own llama-server
  local name=$1; shift; local t=$(date +%s); log "eval $name start"
  $QS eval run "$@" --backend llama-server --parallel 16 --n-ctx 4096 --data-dir $D > $O/eval-$name.log 2>&1 \
    && log "eval $name done in $(( $(date +%s) - t )) s" || log "EVAL $name FAILED: $(tail -2 $O/eval-$name.log)"
}
run_eval smollm2 smollm2=/opt/swarm-models/$SMOL --tasks gsm8k_cot_zeroshot,mmlu_logprob --task-limit gsm8k_cot_zeroshot=1000 \
  --task-limit mmlu_logprob=1000 --results $SM &
for q in F16 Q2_K Q8_0 Q4_K_M Q3_K_M Q6_K Q5_K_M Q2_K-imat; do
  while [ "$(jobs -rp | grep -v "^$REPAIR_PID$" | wc -l)" -ge 3 ]; do sleep 2; done
  run_eval $q /opt/qs-rungs/$q --tasks gsm8k_cot_zeroshot --task-limit gsm8k_cot_zeroshot=1000 --results $RES &
  sleep 1
done
while [ "$(jobs -rp | grep -v "^$REPAIR_PID$" | wc -l)" -gt 0 ]; do sleep 2; done
log "rung evals finished"; pack
log "report (GSM8K 1000 this run; MMLU 1000 from the first campaign's rows, same rung files if the shas match)"
python3 .gj2/merge_mmlu.py $RES || log "MMLU MERGE FAILED"
$QS eval report $RES --out $RES/report > $O/report.log 2>&1 || log "REPORT FAILED"
tail -40 $O/report.log
log "router: labels from the rung + SmolLM2 rows (cost basis: file size), 3 optimizers, router LM SmolLM2"
ln -sf /opt/swarm-models/$SMOL $L/; export QUANTSWARM_MODELS=$L
RR=/opt/qs-router-results; mkdir -p $RR; cp $RES/part-*.parquet $SM/part-*.parquet $RR/
for opt in labeled bootstrap_rs mipro; do
  t=$(date +%s)
  $QS router compile --results $RR --optimizer $opt --out $RO/programs/$opt --router-model /opt/swarm-models/$SMOL \
    --cost-basis size --max-train 48 --max-dev 32 --num-threads 8 >> $O/router.log 2>&1 \
    && log "router $opt compiled in $(( $(date +%s) - t )) s" || log "ROUTER $opt FAILED: $(tail -3 $O/router.log)"
done
progs=(); for opt in labeled bootstrap_rs mipro; do [ -f $RO/programs/$opt/manifest.json ] && progs+=(--program $RO/programs/$opt); done
$QS router eval "${progs[@]}" --results $RR --cost-basis size --out $RO/eval >> $O/router.log 2>&1 || log "ROUTER EVAL FAILED"
python3 benchmarks/router_latency.py --program $RO/programs/mipro -n 100 --out $RO/latency >> $O/router.log 2>&1 \
  || log "ROUTER LATENCY FAILED"
tail -30 $O/router.log; pack
log "waiting for repair A"; wait $REPAIR_PID; log "repair A rc=$?"; tail -30 $O/repair-A.log
finish ok
