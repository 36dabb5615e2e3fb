"""replicator"""
