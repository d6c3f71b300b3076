r"""The search as a LangGraph StateGraph.

    START -> propose -> check --rejected--> repair -> propose      (bounded, proposers that can repair)
                          |        \--rejected--> reflect
                          ok
                        dedup --duplicate--> reflect
                          |new
                        screen -> reflect --stop?--> END
                          |           \--> propose
                          \-> train -> reflect      (only with [train] enabled: promoted candidates are
                                                     trained and judged; agent/train_stage.py)

A failed proposal (the proposer raised) goes straight to reflect. `reflect` records a note, applies the
stopping rules and clears the candidate in flight.
"""
from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from lossforge.agent.nodes import SearchNodes
from lossforge.agent.state import SearchState


def build_graph(nodes: SearchNodes, checkpointer=None) -> CompiledStateGraph:
    """Compile the search graph over `nodes`, with `checkpointer` for durable, resumable state."""
    graph = StateGraph(SearchState)
    graph.add_node("propose", nodes.propose)
    graph.add_node("check", nodes.check)
    graph.add_node("repair", nodes.repair)
    graph.add_node("dedup", nodes.dedup)
    graph.add_node("screen", nodes.screen)
    graph.add_node("reflect", nodes.reflect)
    graph.add_conditional_edges(START, nodes.after_start, {"propose": "propose", "end": END})
    graph.add_conditional_edges("propose", nodes.after_propose, {"check": "check", "reflect": "reflect"})
    graph.add_conditional_edges(
        "check", nodes.after_check, {"repair": "repair", "reflect": "reflect", "dedup": "dedup"}
    )
    graph.add_edge("repair", "propose")
    graph.add_conditional_edges("dedup", nodes.after_dedup, {"reflect": "reflect", "screen": "screen"})
    if nodes.train_stage is not None:  # the optional full-training stage ([train] enabled)
        graph.add_node("train", nodes.train)
        graph.add_edge("screen", "train")
        graph.add_edge("train", "reflect")
    else:
        graph.add_edge("screen", "reflect")
    graph.add_conditional_edges("reflect", nodes.after_reflect, {"propose": "propose", "end": END})
    return graph.compile(checkpointer=checkpointer)
