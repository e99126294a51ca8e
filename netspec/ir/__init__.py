"""The intermediate form: a networkx graph of typed records, with every shape and count."""
