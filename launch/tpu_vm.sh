#!/usr/bin/env bash
# Run a janus_jax experiment on every worker of a Cloud TPU VM slice. --distributed=on: a GCE TPU VM's workers
# learn about each other from the metadata server, which janus_jax.main does not query itself; jax does.
#   launch/tpu_vm.sh NAME ZONE experiments/janus_stages.py:stage=2,size=1b gs://BUCKET/janus/run1 [extra flags]
set -euo pipefail
NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO=${REPO:-https://github.com/your-org/janus_jax}
gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "
  set -e
  [ -d janus_jax ] || git clone $REPO janus_jax
  cd janus_jax && git pull --ff-only
  python3 -m pip install -q -e '.[tpu]'
  python3 -m janus_jax.main --distributed=on --config=$CONFIG --workdir=$WORKDIR $*
"
