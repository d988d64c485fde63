#!/bin/sh
# The compose trainer's command (mounted into the train image by compose.yaml): train the user's
# tfod.yaml, fine-tune from a zoo entry, or train the demo. In compose.multiworker.yaml the chief
# and every worker run this same script, so they train the same config (TF_CONFIG says who is who).
set -e
if [ -n "${TFOD_ZOO_MIRROR_DIR}" ]; then
  export TFOD_ZOO_MIRROR=/mirror  # compose mounts that host folder there
fi
if [ -f /config/tfod.yaml ]; then
  exec tfod train /config/tfod.yaml --runs-dir /runs --no-eval
fi
if [ -n "${TFOD_PRETRAINED}" ]; then
  tfod init --data /data/dataset --out /tmp/tfod.yaml --force --name "${TFOD_RUN:-demo}" \
    --pretrained "$TFOD_PRETRAINED"
  exec tfod train /tmp/tfod.yaml --runs-dir /runs --no-eval ${TFOD_DEMO_STEPS:+--steps $TFOD_DEMO_STEPS}
fi
exec tfod demo --data /data/dataset --runs-dir /runs --run "${TFOD_RUN:-demo}" --no-eval \
  ${TFOD_DEMO_STEPS:+--steps $TFOD_DEMO_STEPS}
