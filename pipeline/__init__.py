"""Pneumonia detection on chest X-rays: tracked hyperparameter search, fine-tuning and registry promotion."""
