#!/usr/bin/env bash
# The whole GPU campaign, started with setsid in call 1; waits for data, model and builds, then:
# info -> ladder (+Q2_K imatrix) -> KLD -> throughput ratio (Q4_K_M, 64 items) -> N -> eval per rung -> report
set -u
O=/opt/qs-out R=/opt/qs-repo L=/opt/qs-ladder RES=/opt/qs-results D=/opt/qs-data
MODEL=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf STEM=qwen2.5-coder-0.5b-instruct-q4_k_m
T0=$(cat $O/t_start); END_RUNGS=$((T0 + ${QS_RUNG_BUDGET_S:-1500}))
log() { echo "[$(date -u +%T) +$(( $(date +%s) - T0 ))s] $*"; }
finish() { log "campaign end: $1"; pack; echo "$1" > $O/campaign.done; exit 0; }
pack() {
  [ -d $RES ] || return 0
  cp $L/ladder.json $RES/ 2>/dev/null
  tar czf $O/results.tar.gz.tmp --exclude='*.kld-base' -C /opt qs-results && mv $O/results.tar.gz.tmp $O/results.tar.gz
}
wait_for() { local d=$1; shift; until eval "$@"; do sleep 5; done; log "ready: $d"; }
wait_for data "[ -f $D/mmlu/test.jsonl ]"
wait_for model "[ -f /opt/swarm-models/$MODEL ]"
wait_for "llama.cpp tools" "[ -f $O/tools.done ]"
[ "$(cat $O/tools.done)" = 0 ] || finish "tools build failed"
wait_for "python wheel" "[ -f /opt/swarm-build.done ]"
[ "$(cat /opt/swarm-build.done)" = 0 ] || finish "llama-cpp-python build failed"
eval "$(bash /opt/swarm-install.sh env)"
B=$(cat $O/tools-dir)
export QUANTSWARM_CACHE=/opt/qs-cache PATH=$B:$PATH PYTHONPATH=$R:$PYTHONPATH
export LLAMA_SERVER_BIN=$B/llama-server LLAMA_PERPLEXITY_BIN=$B/llama-perplexity
export LLAMA_QUANTIZE_BIN=$B/llama-quantize LLAMA_IMATRIX_BIN=$B/llama-imatrix
cd $R
QS="python3 -m quantswarm.cli"
nvidia-smi -q | head -40 > $O/nvidia-smi.txt 2>&1
{ echo "tools dir: $B"; $B/llama-server --version; python3 -c "import llama_cpp as l; print('llama-cpp-python', l.__version__, 'gpu_offload', l.llama_supports_gpu_offload())"
  nvcc --version | tail -2; head -1 /opt/swarm-build.log; grep 'build finished' /opt/swarm-build.log
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv
  sha256sum /opt/swarm-models/$MODEL; } > $O/build-info.txt 2>&1
log "info done"; cat $O/build-info.txt
log "ladder"
$QS eval ladder /opt/swarm-models/$MODEL --out $L --quants Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K --imatrix Q2_K || finish "ladder failed"
(cd $L && sha256sum *.gguf) >> $O/build-info.txt
log "kld"
[ -f $RES/kld.jsonl ] || $QS eval kld $L --results $RES --n-gpu-layers 99 --chunks 32 --n-ctx 512 || log "KLD FAILED (continuing)"
pack
log "throughput ratio"
[ -f $O/eval_throughput-h100.json ] || python3 benchmarks/eval_throughput.py --model $L/$STEM.Q4_K_M.gguf --items 64 --parallel 16 --n-ctx 2048 \
  --data-dir $D --work /opt/qs-tp --out $O/eval_throughput-h100.json > $O/throughput.log 2>&1 || log "THROUGHPUT FAILED"
tr '\r' '\n' < $O/throughput.log | grep -v 'item/s' | tail -12
rate=$(python3 -c "import json; print(json.load(open('$O/eval_throughput-h100.json'))['modes'][0]['items_per_s'])" 2>/dev/null || echo 3)
# 8 rungs; each: N GSM8K items at the 64-item rate (conservative: tail of a short run), ~45 s for 1000 MMLU + start
now=$(date +%s)
N=${QS_N:-}; [ -n "$N" ] || N=$(python3 -c "r=$rate; per=($END_RUNGS-$now)/8-45; n=int(per*r/100)*100; print(max(200,min(1000,n)))")
log "GSM8K items per rung: N=$N (runner rate $rate items/s on 64 items, $(( END_RUNGS - now )) s left for 8 rungs)"
echo "$N" > $O/gsm8k_n
est=$(python3 -c "print(int($N/$rate+45))")
for q in F16 Q4_K_M Q8_0 Q2_K Q3_K_M Q6_K Q5_K_M Q2_K-imat; do
  now=$(date +%s)
  if (( now + est > END_RUNGS )); then log "SKIP $q: estimated ${est}s, $(( END_RUNGS - now ))s left"; continue; fi
  mkdir -p /opt/qs-rungs/$q
  python3 -c "
import json; m=json.load(open('$L/ladder.json')); m['rungs']=[dict(r, path='$L/'+r['path'].split('/')[-1]) for r in m['rungs'] if r['quant']=='$q']
assert m['rungs'], '$q'; json.dump(m, open('/opt/qs-rungs/$q/ladder.json','w'), indent=2)"
  log "eval $q"; t=$(date +%s)
  $QS eval run /opt/qs-rungs/$q --tasks gsm8k_cot_zeroshot,mmlu_logprob --task-limit gsm8k_cot_zeroshot=$N \
    --task-limit mmlu_logprob=1000 --backend llama-server --parallel 16 --n-ctx 4096 --results $RES --data-dir $D \
    || log "EVAL $q FAILED"
  est=$(( $(date +%s) - t + 10 )); log "eval $q done in $(( est - 10 )) s"
  pack
done
log "report"
$QS eval report $RES --out $RES/report > $O/report.log 2>&1 || log "REPORT FAILED"
tail -60 $O/report.log
finish ok
