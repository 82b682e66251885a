#!/usr/bin/env bash
# Machine B (issue 7 parts 2-4): ladder (no imatrix) -> [repair fp32 (pairs + mining rows of machine A) in the
# background] + router compile x3 / eval / latency -> serving router -> wait repair -> serving campaign (alone)
set -u
O=/opt/qs-out R=/opt/qs-repo L=/opt/qs-ladder D=/opt/qs-data RO=/opt/qs-router Y=/opt/qs-repo/.carry-y1
MODEL=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf STEM=qwen2.5-coder-0.5b-instruct-q4_k_m SMOL=smollm2-135m-instruct-q4_1.gguf
T0=$(cat $O/t_start)
log() { echo "[$(date -u +%T) +$(( $(date +%s) - T0 ))s] $*"; }
pack() {
  tar czf $O/results.tar.gz.tmp --exclude='*.gguf' --exclude='*.safetensors' --exclude='adapter' --exclude='merged-hf' \
    --exclude='reference-hf' --exclude='models' --exclude='dpo-work' -C /opt qs-router qs-serving \
    qs-repo/runs/repair-gpu qs-repo/benchmarks/results/repair-gpu 2>/dev/null; mv $O/results.tar.gz.tmp $O/results.tar.gz
}
finish() { log "campaign end: $1"; pack; echo "$1" > $O/campaign.done; exit 0; }
wait_for() { local d=$1; shift; until eval "$@"; do sleep 3; done; log "ready: $d"; }
wait_for data "[ -f $D/mmlu/test.jsonl ]"
wait_for "llama.cpp tools" "[ -f $O/tools.done ]"
[ "$(cat $O/tools.done)" = 0 ] || finish "tools build failed"
wait_for models "[ -f /opt/swarm-models/$MODEL ] && [ -f /opt/swarm-models/$SMOL ]"
wait_for "python binding" "[ -f /opt/swarm-build.done ]"
eval "$(bash /opt/swarm-install.sh env)"
B=$(cat $O/tools-dir)
export QUANTSWARM_CACHE=/opt/qs-cache PATH=$B:$PATH PYTHONPATH=$R:$PYTHONPATH
export LLAMA_SERVER_BIN=$B/llama-server LLAMA_PERPLEXITY_BIN=$B/llama-perplexity LLAMA_QUANTIZE_BIN=$B/llama-quantize
mkdir -p /opt/qs-cache/sdist && cp /opt/swarm-build/llama_cpp_python-0.3.36.tar.gz /opt/qs-cache/sdist/
cd $R; QS="python3 -m quantswarm.cli"
{ $B/llama-server --version; nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv; } > $O/build-info.txt 2>&1
log "ladder (no imatrix rung: the router labels leave it out)"
$QS eval ladder /opt/swarm-models/$MODEL --out $L --quants Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K > $O/ladder.log 2>&1 || finish "ladder failed"
(cd $L && sha256sum *.gguf) >> $O/build-info.txt; ln -sf /opt/swarm-models/$SMOL $L/
log "repair (background): fp32 this time, pairs and mining rows of machine A"
mkdir -p runs/repair-gpu && cp -r $Y/repair-gpu/pairs $Y/repair-gpu/results runs/repair-gpu/
python3 benchmarks/repair_campaign.py gpu --agent $L/$STEM.F16.gguf --set precision=fp32 > $O/repair.log 2>&1 &
RP=$!
export QUANTSWARM_MODELS=$L
log "router: 3 optimizers on labels of the ladder + SmolLM2 rows (GSM8K 1000 + MMLU 1000 each; cost basis file size)"
for opt in labeled bootstrap_rs mipro; do
  t=$(date +%s)
  $QS router compile --results $Y/router-all --optimizer $opt --out $RO/programs/$opt --router-model $L/$SMOL \
    --cost-basis size --max-train 48 --max-dev 32 --num-threads 8 >> $O/router.log 2>&1 \
    && log "router $opt compiled in $(( $(date +%s) - t )) s" || log "ROUTER $opt FAILED: $(tail -2 $O/router.log)"
done
progs=(); for opt in labeled bootstrap_rs mipro; do [ -f $RO/programs/$opt/manifest.json ] && progs+=(--program $RO/programs/$opt); done
$QS router eval "${progs[@]}" --results $Y/router-all --cost-basis size --out $RO/eval >> $O/router.log 2>&1 || log "ROUTER EVAL FAILED"
best=mipro; [ -f $RO/programs/mipro/manifest.json ] || best=labeled
python3 benchmarks/router_latency.py --program $RO/programs/$best -n 100 --out $RO/latency >> $O/router.log 2>&1 || log "ROUTER LATENCY FAILED"
log "serving router: labeled few-shot on the same rows renamed to the swarm's agents"
$QS router compile --results $Y/router-swarm --optimizer labeled --out $RO/programs/swarm-labeled --router-model $L/$SMOL \
  --cost-basis size --max-train 48 --max-dev 32 --num-threads 8 >> $O/router.log 2>&1 || log "SERVING ROUTER FAILED"
pack; log "waiting for repair"; wait $RP; log "repair rc=$?"; tr '\r' '\n' < $O/repair.log | grep -vE 'it/s|s/it|item/s' | tail -25
pack
log "serving campaign (alone on the GPU)"
mkdir -p /tmp/qs-models && ln -sf /opt/swarm-models/*.gguf /tmp/qs-models/
rp=(); [ -f $RO/programs/swarm-labeled/manifest.json ] && rp=(--router-program $RO/programs/swarm-labeled)
SWARM_MODELS=/tmp/qs-models timeout 560 python3 benchmarks/serving_campaign.py --preset gpu "${rp[@]}" --out /opt/qs-serving \
  > $O/serving.log 2>&1 || log "SERVING rc=$?"
tail -40 $O/serving.log
finish ok
