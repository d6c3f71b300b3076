"""The evolutionary (genetic-programming) proposer over the expression language.

``EvolutionaryProposer`` first emits the library seeds (``expressions.SEEDS``) in order, then breeds:
tournament selection over the archive candidates it is shown (``context.best + context.recent`` with a
fitness and a tree genome, minus ``excluded_ids``, plus ``pinned_ids``), subtree crossover and/or a
mutation (point mutation of an op or terminal, constant perturbation, subtree replacement, wrapping in a
unary op, a gated mix with a library seed, an extra term, hoisting). ``RandomSearchProposer``
(``lossforge.proposers.gp.random_search``) draws trees from the same grammar under the same size limits,
with the same guarantees below; the helpers both use are in ``lossforge.proposers.gp.common``.

What this module guarantees
---------------------------
* Determinism without state: a proposal is a pure function of the proposer's constructor arguments and
  the ``ProposalContext``. The random generator is derived from (seed, context.seed, context.step), and
  nothing is remembered between calls, so a killed and resumed search proposes the same candidate at
  the same step.
* Novelty: the returned genome's ``canonical_key`` differs from that of every tree genome in the context
  (best, recent, failures, repair_of); seeds already present are skipped.
* Shape: every returned genome is a simplified, JSON-serialisable tree within ``max_depth`` and
  ``max_size`` (the seeds are within the defaults), that mentions at least one terminal, and ``code`` is
  ``expressions.render(genome, name)``.
* Validity bias (evolutionary only, and the random baseline with ``valid_only=True``): children are
  generated sign-aware (new material keeps the loss decreasing in the margin where the position's
  polarity is known) and screened with ``expressions.check_tree``; with probability ``p_explore`` a
  proposal skips the screen, so exploration is never cut off entirely.

What it does not guarantee
--------------------------
* That a proposal passes the sandbox: the screen is a cheap heuristic.
* Novelty beyond the context: the context is a bounded view, so a genome archived long ago can be
  proposed again; the graph's dedup catches that. Because a proposal is a pure function of the context,
  a caller that rejects one must change the context (e.g. show the rejected genome in ``failures``, or
  advance ``step``) or it gets the same proposal again.
* Fitness is taken as "higher is better"; a candidate without a finite fitness is only bred from when
  pinned (pinned candidates are looked up in best, recent, failures and repair_of). An id both excluded
  and pinned is excluded. ``context.hints`` are not interpreted.
* The seed phase is keyed on ``context.step`` (seed i at step i, skipping seeds already in the context).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from lossforge.proposers.gp.common import _genome, _rng, _short, _views, context_keys, slug
from lossforge.proposers.gp.expressions import (
    BINARY_OPS,
    INCREASING_UNARY,
    NONMONOTONE_UNARY,
    UNARY_OPS,
    Tree,
    canonical_key,
    check_tree,
    children,
    depth,
    has_vars,
    margin_sign,
    polarity,
    random_tree,
    render,
    replace_at,
    seed_trees,
    simplify,
    size,
    subtrees,
    to_infix,
)
from lossforge.proposers.base import ArchiveView, Proposal, ProposalContext

__all__ = ["EvolutionaryProposer"]

_TAUS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_TERM_SCALES = (0.05, 0.1, 0.2, 0.5, 1.0)


def _sentence(desc: str, tree: Tree, limit: int = 320) -> str:
    """One sentence: what was done, and the resulting formula (shortened to stay under ``limit``)."""
    room = limit - len(desc) - len(", giving .")
    if room >= 40:
        return f"{desc}, giving {_short(tree, min(room, 160))}."
    return (desc if len(desc) < limit else desc[: limit - 4] + "...") + "."



def _round(v: float) -> float:
    return float(f"{v:.3g}") + 0.0


@dataclass(frozen=True)
class _Parent:
    id: int | None
    name: str
    tree: Tree
    fitness: float | None

    @property
    def label(self) -> str:
        return f"#{self.id} {self.name}" if self.id is not None else f"seed {self.name}"


def _finite(v: float | None) -> float | None:
    return v if v is not None and isinstance(v, (int, float)) and math.isfinite(v) else None


# --------------------------------------------------------------------------------------------------
# Evolutionary proposer
# --------------------------------------------------------------------------------------------------


class EvolutionaryProposer:
    """Genetic programming over loss expressions (see the module docstring)."""

    def __init__(
        self,
        seed: int = 0,
        *,
        population_size: int = 16,
        tournament_size: int = 3,
        p_crossover: float = 0.5,
        p_mutation: float = 0.7,
        max_depth: int = 6,
        max_size: int = 30,
        p_explore: float = 0.1,
        max_attempts: int = 60,
        seeds: Sequence[str] | None = None,
    ) -> None:
        if max_depth < 2 or max_size < 3:
            raise ValueError("max_depth must be >= 2 and max_size >= 3")
        self.seed = seed
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.p_crossover = p_crossover
        self.p_mutation = p_mutation
        self.max_depth = max_depth
        self.max_size = max_size
        self.p_explore = p_explore
        self.max_attempts = max_attempts
        self.seeds: list[tuple[str, Tree]] = [
            (name, simplify(tree)) for name, tree in seed_trees(list(seeds) if seeds is not None else None)
        ]
        too_big = [n for n, t in self.seeds if depth(t) > max_depth or size(t) > max_size]
        if too_big:
            raise ValueError(f"seeds {too_big} exceed max_depth={max_depth} / max_size={max_size}")

    # -- public --------------------------------------------------------------------------------------

    def propose(self, context: ProposalContext) -> Proposal:
        """The next candidate for ``context`` (pure function of the constructor arguments and context)."""
        rng = _rng("evo", self.seed, context)
        seen = context_keys(context)

        repair = context.repair_of
        if repair is not None and _genome(repair.genome) is not None:
            proposal = self._repair(rng, context, repair, seen)
            if proposal is not None:
                return proposal

        if context.step < len(self.seeds):
            for index in range(context.step, len(self.seeds)):
                name, tree = self.seeds[index]
                if canonical_key(tree) not in seen:
                    return Proposal(
                        thought=(
                            f"Seed {index + 1} of {len(self.seeds)}: the library loss {name} written in the "
                            f"expression language, {_short(tree, 120)}."
                        ),
                        name=name,
                        code=render(tree, name),
                        genome=tree,
                        operator="seed",
                    )

        pool = self._pool(context)
        explore = rng.random() < self.p_explore
        unchecked: tuple[Tree, list[_Parent], str, str] | None = None
        for _ in range(self.max_attempts):
            child, parents, desc, operator = self._vary(rng, pool)
            child = simplify(child)
            if not self._admissible(child, seen):
                continue
            if explore or check_tree(child) is None:
                return self._proposal(context, child, parents, desc, operator)
            if unchecked is None:
                unchecked = (child, parents, desc, operator)
        return self._fallback(rng, context, seen, unchecked)

    # -- selection -----------------------------------------------------------------------------------

    def _pool(self, context: ProposalContext) -> list[_Parent]:
        """Breeding pool: best + recent with fitness and a tree genome, minus excluded, plus pinned."""
        excluded = set(context.excluded_ids)
        pinned = set(context.pinned_ids)
        by_id: dict[int, _Parent] = {}
        listed = {id(v) for v in list(context.best) + list(context.recent)}
        for view in _views(context):
            if view.id in excluded or view.id in by_id:
                continue
            fitness = _finite(view.fitness)
            if view.id in pinned or (fitness is not None and id(view) in listed):
                parsed = _genome(view.genome)
                if parsed is not None:
                    by_id[view.id] = _Parent(view.id, view.name, parsed[0], fitness)
        ranked = sorted(by_id.values(), key=lambda p: (p.fitness is None, -(p.fitness or 0.0), p.id))
        pool = ranked[: self.population_size]
        pool += [p for p in ranked[self.population_size:] if p.id in pinned]
        return pool

    def _tournament(self, rng: random.Random, pool: list[_Parent]) -> _Parent:
        entrants = rng.sample(pool, min(self.tournament_size, len(pool)))
        return max(entrants, key=lambda p: (-math.inf if p.fitness is None else p.fitness, -(p.id or 0)))

    def _seed_parent(self, rng: random.Random, avoid: Tree | None = None) -> _Parent:
        options = [(n, t) for n, t in self.seeds if t != avoid] or self.seeds
        name, tree = rng.choice(options)
        return _Parent(None, name, tree, None)

    # -- variation -----------------------------------------------------------------------------------

    def _vary(self, rng: random.Random, pool: list[_Parent]) -> tuple[Tree, list[_Parent], str, str]:
        if not pool:  # nothing scored yet: mutate the seeds
            parent = self._seed_parent(rng)
            child, desc = self._mutate(rng, parent.tree)
            return child, [parent], f"Mutation of {parent.label}: {desc}", "mutate"
        if rng.random() < self.p_crossover:
            a = self._tournament(rng, pool)
            others = [p for p in pool if p.id != a.id]
            b = self._tournament(rng, others) if others else self._seed_parent(rng, avoid=a.tree)
            child, desc = self._crossover(rng, a, b)
            if rng.random() < self.p_mutation:
                child, more = self._mutate(rng, child)
                desc += f", then {more}"
            return child, [a, b], f"Crossover of {a.label} and {b.label}: {desc}", "crossover"
        a = self._tournament(rng, pool)
        child, desc = self._mutate(rng, a.tree)
        return child, [a], f"Mutation of {a.label}: {desc}", "mutate"

    def _crossover(self, rng: random.Random, a: _Parent, b: _Parent) -> tuple[Tree, str]:
        sites = subtrees(a.tree)
        non_root = [s for s in sites if s[0]]
        path, old = rng.choice(non_root) if non_root and rng.random() < 0.9 else rng.choice(sites)
        room = self.max_depth - len(path)
        donors = [t for _, t in subtrees(b.tree) if depth(t) <= room and t != old] or [
            t for _, t in subtrees(b.tree) if t != old
        ] or [b.tree]
        want = margin_sign(old)
        matching = [t for t in donors if margin_sign(t) == want]
        donor = rng.choice(matching) if matching and rng.random() < 0.8 else rng.choice(donors)
        child = replace_at(a.tree, path, donor)
        return child, f"replaced {_short(old, 40)} in {a.label} with {_short(donor, 40)} from {b.label}"

    def _mutate(self, rng: random.Random, tree: Tree) -> tuple[Tree, str]:
        big = size(tree) > 0.7 * self.max_size or depth(tree) >= self.max_depth
        table = [
            ("point", 0.25),
            ("const", 0.15),
            ("subtree", 0.2),
            ("wrap", 0.05 if big else 0.1),
            ("mix_seed", 0.03 if big else 0.1),
            ("add_term", 0.03 if big else 0.1),
            ("hoist", 0.3 if big else 0.05),
        ]
        total = sum(w for _, w in table)
        x = rng.random() * total
        kind = table[-1][0]
        for name, w in table:
            x -= w
            if x < 0:
                kind = name
                break
        result = getattr(self, f"_m_{kind}")(rng, tree)
        if result is None:  # operator not applicable (e.g. no constants): replace a subtree instead
            result = self._m_subtree(rng, tree)
        return result

    def _m_point(self, rng: random.Random, tree: Tree) -> tuple[Tree, str] | None:
        sites = [(p, n) for p, n in subtrees(tree) if not (isinstance(n, list) and n[0] == "const")]
        path, node = rng.choice(sites)
        keep_sign = rng.random() < 0.85
        if isinstance(node, str):
            if keep_sign:
                new: Tree = {"rho": "c", "c": "rho", "r": ["neg", rng.choice(("rho", "c"))]}[node]
            else:
                new = rng.choice([t for t in ("rho", "c", "r") if t != node])
        else:
            op = node[0]
            if op in UNARY_OPS:
                if op == "neg":
                    new = ["scale", -rng.choice((0.5, 2.0, 5.0)), node[1]]
                else:
                    same = INCREASING_UNARY if op in INCREASING_UNARY else NONMONOTONE_UNARY
                    options = [u for u in (same if keep_sign else UNARY_OPS) if u != op]
                    new = [rng.choice(options), node[1]]
            elif op == "scale":
                new = [rng.choice(INCREASING_UNARY), node[2]] if keep_sign else ["mul", node[2], node[2]]
                if keep_sign and node[1] < 0:
                    new = ["neg", new]
            elif op in BINARY_OPS:
                if op in ("add", "max", "min") and keep_sign:
                    new = [rng.choice([o for o in ("add", "max", "min") if o != op]), node[1], node[2]]
                elif op == "sub" and keep_sign:
                    new = [rng.choice(("max", "min")), node[1], ["neg", node[2]]]
                else:
                    new = [rng.choice([o for o in BINARY_OPS if o != op]), node[1], node[2]]
            else:  # mix: new gate temperature, swapped branches, or a new gate
                r = rng.random()
                if r < 0.5:
                    new = ["mix", node[1], node[2], node[3], rng.choice([t for t in _TAUS if t != node[4]])]
                elif r < 0.75:
                    new = ["mix", node[2], node[1], node[3], node[4]]
                else:
                    new = ["mix", node[1], node[2], random_tree(rng, 1, 0), node[4]]
        return replace_at(tree, path, new), f"changed {_short(node, 40)} to {_short(new, 40)}"

    def _m_const(self, rng: random.Random, tree: Tree) -> tuple[Tree, str] | None:
        sites = [(p, n) for p, n in subtrees(tree) if isinstance(n, list) and n[0] in ("const", "scale", "mix")]
        if not sites:
            return None
        path, node = rng.choice(sites)
        index = {"const": 1, "scale": 1, "mix": 4}[node[0]]
        old = float(node[index])
        if node[0] == "const" and rng.random() < 0.3:
            new_value = _round(old + rng.gauss(0.0, 0.5))
        else:
            new_value = _round(old * math.exp(rng.gauss(0.0, 0.5)))
        if node[0] == "mix":
            new_value = min(max(new_value, 0.005), 10.0)
        if new_value == old:
            new_value = _round(old * 1.5) if old != 0.0 else 0.1
        new = list(node)
        new[index] = new_value
        what = {"const": "the constant", "scale": "the factor", "mix": "the gate temperature"}[node[0]]
        return replace_at(tree, path, new), f"perturbed {what} {old:.4g} -> {new_value:.4g}"

    def _m_subtree(self, rng: random.Random, tree: Tree) -> tuple[Tree, str]:
        sites = subtrees(tree)
        non_root = [s for s in sites if s[0]]
        path, old = rng.choice(non_root) if non_root and rng.random() < 0.9 else rng.choice(sites)
        room = max(1, min(3, self.max_depth - len(path)))
        sign = -polarity(tree, path) if margin_sign(tree) == -1 or not path else 0
        new = random_tree(rng, rng.randint(1, room), sign)
        return replace_at(tree, path, new), f"replaced {_short(old, 40)} with the random {_short(new, 40)}"

    def _m_wrap(self, rng: random.Random, tree: Tree) -> tuple[Tree, str]:
        sites = subtrees(tree)
        path, node = ((), tree) if rng.random() < 0.4 else rng.choice(sites)
        if polarity(tree, path) != 0 and rng.random() < 0.85:
            op = rng.choice(INCREASING_UNARY)
        else:
            op = rng.choice([u for u in UNARY_OPS if u != "neg"])
        return replace_at(tree, path, [op, node]), f"wrapped {_short(node, 40)} in {op}"

    def _m_mix_seed(self, rng: random.Random, tree: Tree) -> tuple[Tree, str]:
        other = self._seed_parent(rng, avoid=tree)
        tau = rng.choice(_TAUS)
        gate: Tree = "rho" if rng.random() < 0.7 else rng.choice(("c", ["neg", "r"]))
        gate_text = to_infix(gate)
        if rng.random() < 0.5:
            new: Tree = ["mix", tree, other.tree, gate, tau]
            desc = f"blended in {other.label} where sigmoid({gate_text}/{tau:g}) is high"
        else:
            new = ["mix", other.tree, tree, gate, tau]
            desc = f"blended in {other.label} where sigmoid({gate_text}/{tau:g}) is low"
        return new, desc

    def _m_add_term(self, rng: random.Random, tree: Tree) -> tuple[Tree, str]:
        term = random_tree(rng, rng.randint(1, 2), -1)
        k = rng.choice(_TERM_SCALES)
        new_term: Tree = ["scale", k, term]
        return ["add", tree, new_term], f"added the term {_short(simplify(new_term), 40)}"

    def _m_hoist(self, rng: random.Random, tree: Tree) -> tuple[Tree, str] | None:
        inner = [n for p, n in subtrees(tree) if p and children(n)]
        if not inner:
            return None
        decreasing = [n for n in inner if margin_sign(n) == -1]
        node = rng.choice(decreasing) if decreasing and rng.random() < 0.8 else rng.choice(inner)
        return node, f"kept only its part {_short(node, 40)}"

    # -- acceptance ----------------------------------------------------------------------------------

    def _admissible(self, tree: Tree, seen: set[str]) -> bool:
        return (
            has_vars(tree)
            and depth(tree) <= self.max_depth
            and size(tree) <= self.max_size
            and canonical_key(tree) not in seen
        )

    def _proposal(
        self, context: ProposalContext, child: Tree, parents: list[_Parent], desc: str, operator: str
    ) -> Proposal:
        name = slug(child, context.step)
        return Proposal(
            thought=_sentence(desc, child),
            name=name,
            code=render(child, name),
            parent_ids=[p.id for p in parents if p.id is not None],
            genome=child,
            operator=operator,
        )

    def _repair(
        self, rng: random.Random, context: ProposalContext, view: ArchiveView, seen: set[str]
    ) -> Proposal | None:
        parent = _Parent(view.id, view.name, _genome(view.genome)[0], _finite(view.fitness))  # type: ignore[index]
        why = (view.check_summary or view.status or "failed").strip().rstrip(".")
        why = why if len(why) <= 80 else why[:77] + "..."
        for _ in range(self.max_attempts):
            child, desc = self._mutate(rng, parent.tree)
            child = simplify(child)
            if self._admissible(child, seen) and check_tree(child) is None:
                return self._proposal(
                    context, child, [parent], f"Repair of {parent.label} ({why}): {desc}", "repair"
                )
        return None

    def _fallback(
        self,
        rng: random.Random,
        context: ProposalContext,
        seen: set[str],
        unchecked: tuple[Tree, list[_Parent], str, str] | None,
    ) -> Proposal:
        """When variation keeps failing: a fresh screened decreasing tree, else the first unscreened child."""
        for _ in range(500):
            tree = simplify(random_tree(rng, rng.randint(2, min(4, self.max_depth)), -1))
            if self._admissible(tree, seen) and check_tree(tree) is None:
                desc = "Fresh random decreasing tree (variation kept failing)"
                return self._proposal(context, tree, [], desc, "random")
        if unchecked is not None:
            return self._proposal(context, *unchecked)
        while True:  # the grammar is infinite, so a new admissible tree always turns up
            tree = simplify(random_tree(rng, self.max_depth, -1))
            if self._admissible(tree, seen):
                return self._proposal(context, tree, [], "Fresh random tree (variation kept failing)", "random")
