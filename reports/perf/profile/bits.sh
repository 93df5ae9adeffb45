#!/bin/bash
# 10 suite-shaped runs of benchmarks.train into OUTDIR; then
#   python reports/perf/profile/digest.py OUTDIR
# prints each run's final-weights SHA-256 and a digest of metrics.csv less system_*.
# usage: reports/perf/profile/bits.sh OUTDIR  (from the repository root)
OUT=$1; mkdir -p $OUT
PY=/work/main/.venv/bin/python
BASE="--dataset=synthetic --num_examples=64 --input_dim=16 --num_clients=4 --model=mlp --depth=1 --train_layers=hidden --lr_scale=width --client_lr=8 --algorithm=local_gd --local_steps=5 --batch_size=8 --rounds=12 --engine=inprocess --root_dir=$OUT --checkpoint_every=0"
run() { name=$1; shift; $PY -m benchmarks.train $BASE --experiment=$name "$@" --overwrite >$OUT/$name.log 2>&1 || echo "FAIL $name"; }
run w64 --width=64
run w256 --width=256 --seed=1
run w1024 --width=1024
run sgd --width=128 --algorithm=local_sgd --seed=2
run cohort --width=128 --num_clients=8 --clients_per_round=3
run diag --width=128 --diag_every=4 --ntk_every=4
run pack --width=128 --clients_per_pack=2
run eval2 --width=128 --eval_every=3
run digits --dataset=digits --num_examples=400 --width=128 --train_layers=all --loss=xent --lr_scale=none --client_lr=0.5 --partition=dirichlet --algorithm=local_sgd
run k20 --width=256 --local_steps=20
