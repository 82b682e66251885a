#!/usr/bin/env bash
set -u
O=/opt/q2/out M=/opt/swarm-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
log() { echo "[$(date -u +%T) +$(( $(date +%s) - $(cat $O/t_start) ))s] $*"; }
until [ -f $O/build.done ]; do sleep 5; done; log "build done: $(cat $O/build.done)"
[ "$(cat $O/build.done)" = 0 ] || { echo failed > $O/done; exit 1; }
BIN=/opt/q2/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin; ls $BIN
# the Python binding: its pure-Python package + the shared libraries of the same build
cp -r /opt/q2/llama_cpp_python-0.3.36/llama_cpp /opt/q2/site/ && ln -sfn $BIN /opt/q2/site/llama_cpp/lib
D=/opt/q2/site/llama_cpp_python-0.3.36.dist-info; mkdir -p $D; printf 'Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n' > $D/METADATA
export PYTHONPATH=/opt/q2/repo:/opt/q2/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 LLAMA_SERVER_BIN=$BIN/llama-server
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
cd /opt/q2/repo
{ $BIN/llama-server --version; python3 -c "import llama_cpp as l; print('llama-cpp-python', l.__version__, 'gpu_offload', l.llama_supports_gpu_offload())"; } 2>&1 | tee $O/build-info2.txt
until [ -f $M ]; do sleep 3; done; log "model ready"
python3 -c "
from pathlib import Path; from evals.ladder import make_ladder
for r in make_ladder(Path('$M'), Path('/opt/q2/ladder'), ('Q4_K_M',)): print(r)" 2>&1 | tail -3
(cd /opt/q2/ladder && sha256sum *.gguf) | tee -a $O/build-info2.txt
R=/opt/q2/ladder/qwen2.5-coder-0.5b-instruct-q4_k_m.Q4_K_M.gguf
log "bench A: sequential = llama-server, 1 slot"
python3 -X faulthandler benchmarks/eval_throughput.py --model $R --items 64 --parallel 16 --data-dir /opt/q2/data \
  --sequential-backend llama-server --out $O/eval_throughput-h100-server1.json > $O/benchA.log 2>&1; log "A rc=$?"
log "bench B: sequential = llama-cpp-python, 1 context"
python3 -X faulthandler benchmarks/eval_throughput.py --model $R --items 64 --parallel 16 --data-dir /opt/q2/data \
  --out $O/eval_throughput-h100.json > $O/benchB.log 2>&1; log "B rc=$?"
echo ok > $O/done
