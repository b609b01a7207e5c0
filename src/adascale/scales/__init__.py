"""adascale.scales"""
