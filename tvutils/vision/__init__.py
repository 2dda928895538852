"""The vision case study: Colored-MNIST tasks and a transformers ViT, pre-trained, fine-tuned and merged."""

import warnings

from tqdm import TqdmWarning

# transformers imports tqdm.auto, which warns inside Jupyter when ipywidgets is absent; the book shows no bars
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
