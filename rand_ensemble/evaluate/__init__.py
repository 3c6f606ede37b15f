"""The evaluation stage: how good are the embeddings?

    one_of_ten.py     1-of-10 test-set accuracy per model and ensemble, top-k, MRR, bootstrap
    eval_test_set.py  the `eval` / `demo` protocol: embed a test set, report, write, print
    retrieval.py      precision@1, R-precision, MAP@R, Recall@K on a labelled pool
    weak_labels.py    exact top-k neighbours, weak-label pairs and their precision (numpy)
    plots.py          figures (matplotlib, Agg): accuracy vs size, collage, PCA by label
"""
