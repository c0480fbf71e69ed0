"""The runs the torchrun tests compare, shared by the test process and the job it launches (torchrun_job.py)."""

from flexaudit.moe.expert import ExpertOptions
from flexaudit.privacy.expert_training import DPOptions

STEPS = 20
# public rows (router negatives with the anchor pull) and a batch that splits unevenly over the owner rows
NON_DP = ExpertOptions(steps=STEPS, batch_size=7, checkpoint_every=3)
# clipping active (per-unit gradients are larger than C); exactly what DP_ARGS give on the command line
DP = ExpertOptions(steps=STEPS, batch_size=8, checkpoint_every=3,
                   dp=DPOptions(noise_multiplier=1.0, max_grad_norm=0.05))
DP_ARGS = ("--steps", STEPS, "--batch-size", 8, "--checkpoint-every", 3, "--dp", "--noise-multiplier", 1.0,
           "--max-grad-norm", 0.05)
ANCHOR_STEPS = 4
