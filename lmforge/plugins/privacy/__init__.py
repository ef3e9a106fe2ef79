"""Privacy: detection and redaction of personal data (``pii.py``) and the memorization probe of
Carlini et al. 2019, "The Secret Sharer" (``canaries.py``)."""
