#!/usr/bin/env bash
# Share of SLURM generation jobs spent generating, one image per job against
# ten, on the one-node test cluster of tests/cluster (run as root, in the
# project's virtual environment):
#     bash benchmarks/slurm_load_share.sh
# Study: the ten default images x (baseline + one prompt), one seed, tiny model.
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
bash "$repo/tests/cluster/slurm_up.sh" || exit 3
trap 'bash "$repo/tests/cluster/slurm_down.sh"' EXIT
for images_per_job in 1 10; do
  study=$(mktemp -d)
  cp -r "$repo"/{Snakefile,workflow,profiles,config,resources} "$study"/
  sed -i "s/^seeds: \[0, 1\]/seeds: [0]/" "$study/config/config.yaml"
  printf 'prompt_id\tkind\temphasis\ttext\npos5\tpositive\t5\tbest quality, extremely detailed\n' \
    > "$study/config/prompts.tsv"
  cd "$study" || exit 1
  before=$(scontrol show job --oneliner 2>/dev/null | grep -c JobId)
  start=$(date +%s.%N)
  timeout -s INT -k 30 900 python -m snakemake --profile profiles/slurm \
    --slurm-init-seconds-before-status-checks 1 --seconds-between-status-checks 1 \
    --default-resources runtime=10 mem_mb=1000 cpus_per_gpu=1 \
    --config images_per_generation_job=$images_per_job > run.log 2>&1
  status=$?
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  generating=$(grep -h "seeds in" logs/generate/*/*.log | sed 's/.* seeds in \([0-9.]*\) s.*/\1/' | paste -sd+ | bc)
  jobs_wall=$(scontrol show job --oneliner | tail -n +$((before + 1)) \
    | grep -o "StartTime=[^ ]* EndTime=[^ ]*" | python3 -c '
import sys
from datetime import datetime
total = 0.0
for line in sys.stdin:
    start, end = (datetime.fromisoformat(part.split("=")[1]) for part in line.split())
    total += (end - start).total_seconds()
print(total)')
  echo "images per job $images_per_job: exit $status, study ${wall} s," \
    "$(grep -c 'submitted with SLURM jobid' run.log) jobs, job wall ${jobs_wall} s summed," \
    "generating ${generating} s"
  cd "$repo" || exit 1
  rm -rf "$study"
done
