"""The evaluation stage: how good are the embeddings?

    neighbours.py     THE one exact k-NN engine (find the neighbours once; metrics take labels)
    exact_scores.py   a pair's score: the exact dot product rounded once to float32
    approx.py         the optional approximate index (faiss IVF), recall against the engine
    one_of_ten.py     1-of-10 test-set accuracy per model and ensemble, top-k, MRR, bootstrap
    eval_test_set.py  run_eval, run_demo: the blog's protocol end to end
    retrieval.py      P@1, R-precision, MAP@R, Recall@K, k-NN accuracy with intervals
    eval_pool.py      run_retrieval: the retrieval protocol on any labelled dataset
    weak_labels.py    weak-label pairs, rank-1 and per-member precision, the summary (numpy)
    baselines.py      training-free baselines: raw, PCA-whitened and HOG pixels (no labels)
    label_free.py     model selection without labels: held-out partner recall, RankMe
    report.py         the human-readable tables of the eval and retrieval reports
    plots.py          figures (matplotlib, Agg): accuracy vs size, collage, PCA by label
"""
