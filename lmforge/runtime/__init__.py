"""What a run needs besides the model: the Lightning strategies the overlays name
(`strategies`), saving on preemption (`preemption`), atomic checkpoint writes
(`checkpoint_io`), the host allocator's tuning (`allocator`), where a recipe may
write (`run_paths`) and the observability callbacks (`observe`).

It builds on `lmforge.core` and is used by `lmforge.cli`.
"""
