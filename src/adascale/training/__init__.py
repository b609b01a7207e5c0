"""adascale.training"""
