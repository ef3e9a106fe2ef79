"""The ``lmforge`` command (`main`) and its subcommands.

`main` and `commands` import neither torch nor Lightning, so ``lmforge --help``
and the tools answer at once; `training` (fit/validate/test through
LightningCLI) and each tool's own module load only when that command runs.
"""
