"""Report text: negation-aware reader (polarity checker, claims), MCQ/affirmative writers, foils."""
