"""Pacemaker's side of a pair: the OCF resource agent (agent.py decides, node.py acts)."""
