"""tff-localsgd: Local SGD on overparameterized ReLU networks, as TFF computations."""
