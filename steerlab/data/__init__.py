"""Contrast datasets: item types, loaders for CAA / persona / pair files, and built-in data."""

from steerlab.data.formats import ABItem, ContrastPair
from steerlab.data.loaders import Dataset, data_dir, load_dataset, load_pairs

__all__ = ["ABItem", "ContrastPair", "Dataset", "data_dir", "load_dataset", "load_pairs"]
