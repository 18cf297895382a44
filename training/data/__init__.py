"""Datasets of defect images: readers for common layouts, splits, prompts, torch datasets."""
