r"""The search as LangGraph graphs: a supervisor over per-candidate walks.

The supervisor (checkpointed after every node; ``agent/supervisor.py``):

    START -> dispatch --something in flight--> collect --stop and nothing in flight--> END
                 ^   \--nothing to do--> END      |
                 |                                |
                 +-------- room for more ---------+  (a stop lets the candidates in flight finish)

One candidate (``build_candidate_graph``; several run at once with ``[search] concurrency``):

    START --enter--> propose -> check --rejected--> repair -> propose   (bounded; proposers that can repair)
      (a resumed          |        \--rejected--> reflect
       candidate          ok
       enters where     dedup --duplicate--> reflect
       its archive        |new
       row is)          screen -> reflect -> END
                          \-> train -> reflect     (only with [train] enabled: promoted candidates are
                                                    trained and judged; agent/train_stage.py)

A failed proposal (the proposer raised) goes straight to reflect. With concurrency 1 the supervisor walks
one candidate at a time, in the order and with the step numbers of the original single graph.
"""
from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from lossforge.agent.nodes import SearchNodes
from lossforge.agent.state import CandidateState, SearchState
from lossforge.agent.supervisor import Supervisor, timed


def build_candidate_graph(nodes: SearchNodes) -> CompiledStateGraph:
    """One candidate's walk from proposal to reflection (no checkpointer: it resumes from the archive)."""
    graph = StateGraph(CandidateState)
    graph.add_node("propose", timed(nodes.propose))
    graph.add_node("check", timed(nodes.check))
    graph.add_node("repair", timed(nodes.repair))
    graph.add_node("dedup", timed(nodes.dedup))
    graph.add_node("screen", timed(nodes.screen))
    graph.add_node("reflect", timed(nodes.reflect))
    routes = {"propose": "propose", "check": "check", "repair": "repair", "dedup": "dedup", "screen": "screen",
              "reflect": "reflect", "end": END}
    if nodes.train_stage is not None:  # the optional full-training stage ([train] enabled)
        graph.add_node("train", timed(nodes.train))
        routes["train"] = "train"
    graph.add_conditional_edges(START, nodes.enter, routes)
    graph.add_conditional_edges("propose", nodes.after_propose, {"check": "check", "reflect": "reflect", "end": END})
    graph.add_conditional_edges(
        "check", nodes.after_check, {"repair": "repair", "reflect": "reflect", "dedup": "dedup"}
    )
    graph.add_edge("repair", "propose")
    graph.add_conditional_edges("dedup", nodes.after_dedup, {"reflect": "reflect", "screen": "screen"})
    if nodes.train_stage is not None:
        graph.add_edge("screen", "train")
        graph.add_edge("train", "reflect")
    else:
        graph.add_edge("screen", "reflect")
    graph.add_edge("reflect", END)
    return graph.compile()


def build_graph(supervisor: Supervisor, checkpointer=None) -> CompiledStateGraph:
    """Compile the supervisor graph, with `checkpointer` for durable, resumable state."""
    graph = StateGraph(SearchState)
    graph.add_node("dispatch", supervisor.dispatch)
    graph.add_node("collect", supervisor.collect)
    graph.add_edge(START, "dispatch")
    graph.add_conditional_edges("dispatch", supervisor.after_dispatch, {"collect": "collect", "end": END})
    graph.add_conditional_edges("collect", supervisor.after_collect,
                                {"dispatch": "dispatch", "collect": "collect", "end": END})
    return graph.compile(checkpointer=checkpointer)
