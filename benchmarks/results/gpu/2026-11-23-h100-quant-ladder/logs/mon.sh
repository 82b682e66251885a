t=${1:-400}; O=/opt/q2/out
while [ ! -f $O/done ] && [ "$t" -gt 0 ]; do sleep 5; t=$((t - 5)); done
echo "== build: $(cat $O/build.done 2>/dev/null || tail -c 200 $O/build.log)"
cat $O/run.log | tail -30
for f in benchA.log benchB.log; do [ -f $O/$f ] && { echo "== $f"; tr '\r' '\n' < $O/$f | grep -v 'item/s\]\|s/item\]' | tail -15; }; done
cp $O/*.json $O/*.log $O/build-info2.txt $OUT/ 2>/dev/null; exit 0
