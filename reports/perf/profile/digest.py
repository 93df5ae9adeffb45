"""Per run directory under argv[1]: final_weights_sha256 and a digest of metrics.csv less its system_* columns."""
import sys, json, csv, os, glob, hashlib
root = sys.argv[1]
for d in sorted(glob.glob(os.path.join(root, '*/'))):
  s = json.load(open(os.path.join(d, 'summary.json')))
  rows = list(csv.DictReader(open(os.path.join(d, 'metrics.csv'))))
  keep = [{k: v for k, v in r.items() if not k.startswith('system')} for r in rows]
  h = hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
  print(os.path.basename(d.rstrip('/')), s.get('final_weights_sha256', '?')[:16], 'metrics', h, 'rows', len(rows))
