"""Evaluation: judges that score answers and the paper's win - loss metric."""
