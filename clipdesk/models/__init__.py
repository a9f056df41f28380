"""What a model is and how it is kept and run: the catalog, the models folder (downloads,
imports), the torch and the exported encoders, writing an export, the tokenizer."""
