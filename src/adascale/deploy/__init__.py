"""adascale.deploy"""
