#!/usr/bin/env bash
# Trains a pose_jax experiment on a Cloud TPU VM pod slice: every worker runs the
# same command (one JAX process per host); jax.distributed.initialize() with no
# arguments reads the slice's topology from the TPU metadata server.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b \
#   CONFIG=configs/d3dp_h36m.py:keypoints=gt \
#   WORKDIR=gs://my-bucket/runs/d3dp_gt DATA_DIR=gs://my-bucket/tfds \
#   bash launch/recipes/tpu_vm_pod.sh [extra launch.train flags...]
#
# The code is copied to every worker with `scp --worker=all` (or set REPO_URL to
# clone it there). Re-running the same command after a preemption resumes from
# WORKDIR's last checkpoint. config.data.batch_size is the GLOBAL batch: it must
# divide by the number of hosts (each reads batch_size / hosts rows).
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
: "${CONFIG:?set CONFIG, e.g. configs/d3dp_h36m.py:keypoints=gt}"
: "${WORKDIR:?set WORKDIR (a gs:// path, shared by every worker)}"
PROJECT_FLAG=${PROJECT:+--project=${PROJECT}}
REMOTE_DIR=${REMOTE_DIR:-pose_jax}
PYTHON=${PYTHON:-python3}
DATA_FLAG=${DATA_DIR:+--config.data.data_dir=${DATA_DIR}}

ssh_all() {
  # shellcheck disable=SC2086
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone="${ZONE}" ${PROJECT_FLAG} \
    --worker=all --command="$1"
}

if [[ "${SKIP_SETUP:-0}" != "1" ]]; then
  if [[ -n "${REPO_URL:-}" ]]; then
    ssh_all "rm -rf ${REMOTE_DIR} && git clone --depth=1 ${REPO_URL} ${REMOTE_DIR}"
  else
    repo_root=$(cd "$(dirname "$0")/../.." && pwd)
    tarball=$(mktemp -t pose_jax.XXXXXX.tar.gz)
    git -C "${repo_root}" archive --format=tar.gz -o "${tarball}" HEAD
    # shellcheck disable=SC2086
    gcloud compute tpus tpu-vm scp "${tarball}" "${TPU_NAME}:pose_jax.tar.gz" \
      --zone="${ZONE}" ${PROJECT_FLAG} --worker=all
    ssh_all "rm -rf ${REMOTE_DIR} && mkdir -p ${REMOTE_DIR} && tar -xzf pose_jax.tar.gz -C ${REMOTE_DIR}"
    rm -f "${tarball}"
  fi
  ssh_all "cd ${REMOTE_DIR} && ${PYTHON} -m pip install -q -U 'jax[tpu]' -e '.[tb]'"
fi

# Every worker, same command; --distributed -> launch.distributed finds no POSE_JAX_*
# variables and calls jax.distributed.initialize() with no arguments.
# The final evaluation runs on every worker's chips (pass --noevaluate to skip it).
ssh_all "cd ${REMOTE_DIR} && ${PYTHON} -m launch.train --distributed \
  --config='${CONFIG}' --workdir='${WORKDIR}' ${DATA_FLAG} $*"
