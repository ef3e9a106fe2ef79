"""What a run needs besides the model: strategies, preemption, checkpoint IO, run paths, observability."""
