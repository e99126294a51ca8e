"""netspec: a declarative network-spec compiler."""
