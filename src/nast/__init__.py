"""NAST: a reproducible pipeline that measures and repairs negation blindness in
medical vision-language models (Negation-Aware Selective Training)."""

__version__ = "0.1.0"
