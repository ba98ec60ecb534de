"""The founding article's credit-card-fraud example on edgefleet: ``python -m examples.fraud.run --out DIR``."""
