"""Evaluation of a trained method: MCQ (negated/affirmative), contextual claims, retrieval, AUROC."""
