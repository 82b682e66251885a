"""Non-LLM routers to bracket the DSPy programs: random, always-cheapest, always-strongest, TF-IDF + LogReg, oracle.

Every baseline answers ``route(text) -> RouteDecision`` like a loaded Router. The TF-IDF router saves as plain
JSON (vocabulary, idf, coefficients), never pickle, so the serving helper can load it without the router LM.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np

from quantswarm.errors import ConfigError
from router.labels import RoutingExample
from router.program import RouteDecision

TFIDF_FORMAT = "quantswarm-router-tfidf/1"


class ConstantRouter:
    """Always the same agent (always-cheapest, always-most-capable)."""

    def __init__(self, agent: str, name: str):
        self.agent, self.name = agent, name

    def route(self, text: str) -> RouteDecision:
        t0 = time.perf_counter()
        return RouteDecision(self.agent, (time.perf_counter() - t0) * 1000)


class RandomRouter:
    """A uniformly random agent, seeded."""

    name = "random"

    def __init__(self, agents: list[str], seed: int = 0):
        self.agents, self.rng = list(agents), random.Random(seed)

    def route(self, text: str) -> RouteDecision:
        t0 = time.perf_counter()
        agent = self.rng.choice(self.agents)
        return RouteDecision(agent, (time.perf_counter() - t0) * 1000)


class OracleRouter:
    """The label itself (the cheapest agent that solved the item): the upper bracket."""

    name = "oracle"

    def __init__(self, examples: list[RoutingExample]):
        self.by_text = {ex.task: ex.agent for ex in examples}

    def route(self, text: str) -> RouteDecision:
        t0 = time.perf_counter()
        agent = self.by_text[text]
        return RouteDecision(agent, (time.perf_counter() - t0) * 1000)


class TfidfRouter:
    """TF-IDF (word 1-2 grams) + multinomial logistic regression over the labels; JSON-serialisable."""

    name = "tfidf-logreg"

    def __init__(self, vectorizer, classifier, fallback: str):
        self.vectorizer, self.classifier, self.fallback = vectorizer, classifier, fallback

    @classmethod
    def fit(cls, examples: list[RoutingExample], fallback: str, *, C: float = 4.0, seed: int = 0) -> TfidfRouter:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        if not examples:
            raise ConfigError("TF-IDF router needs training examples; check the train split is not empty")
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, max_features=20000)
        x = vec.fit_transform([ex.task for ex in examples])
        labels = [ex.agent for ex in examples]
        if len(set(labels)) < 2:
            clf = _SingleClass(labels[0])
        else:
            clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x, labels)
        return cls(vec, clf, fallback)

    def route(self, text: str) -> RouteDecision:
        t0 = time.perf_counter()
        agent = str(self.classifier.predict(self.vectorizer.transform([text]))[0])
        return RouteDecision(agent, (time.perf_counter() - t0) * 1000)

    def save(self, path: str | Path) -> Path:
        vec, clf = self.vectorizer, self.classifier
        state = {
            "format": TFIDF_FORMAT,
            "fallback": self.fallback,
            "vectorizer": {"ngram_range": list(vec.ngram_range), "sublinear_tf": vec.sublinear_tf,
                           "vocabulary": {k: int(v) for k, v in vec.vocabulary_.items()}, "idf": vec.idf_.tolist()},
            "classes": [str(c) for c in clf.classes_],
            "coef": np.asarray(clf.coef_).tolist(),
            "intercept": np.asarray(clf.intercept_).tolist(),
        }
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(state))
        return p

    @classmethod
    def load(cls, path: str | Path) -> TfidfRouter:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        p = Path(path)
        try:
            state = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: not a readable TF-IDF router JSON ({exc}); refit with `router compile`") from None
        if state.get("format") != TFIDF_FORMAT:
            raise ConfigError(f"{p}: format {state.get('format')!r} is not {TFIDF_FORMAT!r}")
        v = state["vectorizer"]
        vec = TfidfVectorizer(ngram_range=tuple(v["ngram_range"]), sublinear_tf=v["sublinear_tf"],
                              vocabulary=v["vocabulary"])
        vec.idf_ = np.asarray(v["idf"], dtype=np.float64)
        if len(state["classes"]) == 1:
            clf = _SingleClass(state["classes"][0])
        else:
            clf = LogisticRegression()
            clf.classes_ = np.asarray(state["classes"])
            clf.coef_ = np.asarray(state["coef"], dtype=np.float64)
            clf.intercept_ = np.asarray(state["intercept"], dtype=np.float64)
        return cls(vec, clf, state["fallback"])


class _SingleClass:
    """What a classifier trained on one label predicts."""

    def __init__(self, label: str):
        self.classes_ = np.asarray([label])
        self.coef_ = np.zeros((1, 0))
        self.intercept_ = np.zeros(1)

    def predict(self, x) -> np.ndarray:
        return np.asarray([self.classes_[0]] * x.shape[0])


class KnnTauRouter:
    """Nearest neighbours of the task among training items, then the cheapest agent predicted to succeed.

    The success probability of each agent on a new task is the mean of its measured success probabilities on the
    ``k`` most similar training tasks (cosine similarity of ``embed`` vectors); the router picks the cheapest agent
    whose estimate is >= ``tau``, else the agent with the highest estimate. ``embed`` maps a list of texts to an
    (n, d) array: TF-IDF vectors (:meth:`tfidf`) or the router LM's own embeddings (llama-server ``/embedding``).
    """

    def __init__(self, examples: list[RoutingExample], agents: list[str], cost: dict[str, float], embed,
                 *, k: int = 10, tau: float = 0.5, name: str = "knn"):
        if not examples:
            raise ConfigError("the kNN router needs training examples")
        self.agents, self.cost, self.embed, self.k, self.tau, self.name = agents, cost, embed, k, tau, name
        vecs = np.asarray(embed([ex.task for ex in examples]), dtype=np.float64)
        self.train = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        self.p = np.array([[ex.p(a) for a in agents] for ex in examples])  # (n_train, n_agents)
        self.order = sorted(range(len(agents)), key=lambda i: (cost[agents[i]], agents[i]))

    def estimate(self, text: str) -> np.ndarray:
        """Estimated success probability per agent (in ``self.agents`` order)."""
        v = np.asarray(self.embed([text]), dtype=np.float64)[0]
        v = v / max(np.linalg.norm(v), 1e-12)
        nearest = np.argsort(-(self.train @ v))[: self.k]
        return self.p[nearest].mean(axis=0)

    def choose(self, est: np.ndarray, tau: float) -> str:
        for i in self.order:
            if est[i] >= tau:
                return self.agents[i]
        return self.agents[max(self.order, key=lambda i: (est[i], -self.cost[self.agents[i]]))]

    def route(self, text: str) -> RouteDecision:
        t0 = time.perf_counter()
        agent = self.choose(self.estimate(text), self.tau)
        return RouteDecision(agent, (time.perf_counter() - t0) * 1000)

    @staticmethod
    def tfidf(examples: list[RoutingExample]):
        """An ``embed`` function: TF-IDF (word 1-2 grams) fitted on the training texts."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=20000)
        vec.fit([ex.task for ex in examples])
        return lambda texts: vec.transform(texts).toarray()


def llama_embedder(url: str, *, timeout: float = 60.0, max_chars: int = 600):
    """An ``embed`` function over llama-server's ``/embedding`` endpoint (a server started with --embeddings)."""
    import httpx

    client = httpx.Client(base_url=url, timeout=timeout)

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            r = client.post("/embedding", json={"content": text[:max_chars]})
            if r.status_code != 200:
                raise ConfigError(f"{url}/embedding answered {r.status_code}: {r.text[:200]}")
            data = r.json()
            row = data[0] if isinstance(data, list) else data
            emb = row["embedding"]
            out.append(np.asarray(emb[0] if emb and isinstance(emb[0], list) else emb, dtype=np.float64))
        return np.vstack(out)

    return embed
