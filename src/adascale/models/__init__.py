"""adascale.models"""
