#!/usr/bin/env bash
# call 1 (after b1/install.sh): copy the repo to /opt/qs-repo, start our tools build and the campaign (setsid)
set -u
mkdir -p /opt/qs-repo /opt/qs-out
tar -cf - --exclude=./.carry --exclude=./.git --exclude=./.gpudata . | tar -xf - -C /opt/qs-repo
date +%s > /opt/qs-out/t_start
setsid bash /opt/qs-repo/.gpujob/build.sh > /opt/qs-out/tools-build.log 2>&1 < /dev/null &
setsid bash /opt/qs-repo/.gpujob/campaign.sh > /opt/qs-out/campaign.log 2>&1 < /dev/null &
sleep 2; echo "started: build.sh, campaign.sh"; nproc; free -g | head -2; ls /usr/local/cuda*/lib64/libcublas.so* 2>&1 | head -3; command -v nvcc
