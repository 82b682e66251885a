#!/usr/bin/env bash
# our builder (quantswarm.engine.build.build_tools) for llama-server & co., CUDA sm_90; fallback: install.sh tools
set -u
export QUANTSWARM_CACHE=/opt/qs-cache CUDA_ARCHS=90-real
export CUDACXX=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
# build_tools names its cache folder by the installed llama-cpp-python version; the wheel is still building
# (install.sh, in parallel), so a metadata-only stand-in of the same version lets it start now
F=/tmp/qs-fakemeta/llama_cpp_python-0.3.36.dist-info; mkdir -p $F
printf 'Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.36\n' > $F/METADATA
t0=$(date +%s)
cd /opt/qs-repo && PYTHONPATH=/opt/qs-repo:/tmp/qs-fakemeta python3 -c "
from pathlib import Path
from quantswarm.engine.build import build_tools
build_tools(source=Path('/opt/swarm-build/llama_cpp_python-0.3.36.tar.gz'), backend='cuda')"
rc=$?
echo "our builder: rc=$rc after $(( $(date +%s) - t0 )) s"
if [ $rc -ne 0 ]; then
  echo "FALLBACK: bash /opt/swarm-install.sh tools"; bash /opt/swarm-install.sh tools
  while [ ! -f /opt/llama-tools.done ]; do sleep 5; done; rc=$(cat /opt/llama-tools.done)
  echo "install.sh tools: rc=$rc after $(( $(date +%s) - t0 )) s"; echo /opt/llama-bin > /opt/qs-out/tools-dir
else
  echo /opt/qs-cache/llama.cpp/0.3.36-cuda/bin > /opt/qs-out/tools-dir
fi
echo $rc > /opt/qs-out/tools.done
