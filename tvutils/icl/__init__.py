"""The ICML 2024 in-context-learning paper's theory model (Part II of the book): to be written, as a twin of
``tvutils.taskvec`` with the same module names."""
