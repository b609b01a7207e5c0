"""adascale.report"""
