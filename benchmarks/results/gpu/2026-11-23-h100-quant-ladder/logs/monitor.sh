#!/usr/bin/env bash
# every later call: wait up to $1 s for the campaign, show progress, copy what is there to $OUT
t=${1:-480}; O=/opt/qs-out
while [ ! -f $O/campaign.done ] && [ "$t" -gt 0 ]; do sleep 10; t=$((t - 10)); done
echo "== wheel build: $(cat /opt/swarm-build.done 2>/dev/null || grep -oE '\[[0-9]+/[0-9]+\]' /opt/swarm-build.log | tail -1)"
echo "== tools: $(cat $O/tools.done 2>/dev/null || tail -c 300 $O/tools-build.log; ls -t /opt/qs-cache/llama.cpp/src-*/llama_cpp_python-*/vendor/llama.cpp/build-cuda.log 2>/dev/null | head -1 | xargs -r tail -c 200)"
echo "== campaign: $(cat $O/campaign.done 2>/dev/null || echo running)"
tr '\r' '\n' < $O/campaign.log | grep -vE 'item/s\]|file/s\]|s/item\]|s/file\]' | tail -${2:-40}
for f in campaign.log tools-build.log results.tar.gz nvidia-smi.txt build-info.txt eval_throughput-h100.json throughput.log report.log; do
  [ -f $O/$f ] && cp $O/$f $OUT/
done
exit 0
