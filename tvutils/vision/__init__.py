"""The vision case study: Colored-MNIST tasks and a transformers ViT, pre-trained, fine-tuned and merged."""
