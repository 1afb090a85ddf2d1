// Python's json module writes float('inf') and NaN as the bare tokens
// Infinity, -Infinity and NaN (diffusers' DPMSolverMultistepScheduler saves
// lambda_min_clipped = -inf that way), which JSON.parse rejects. This reads
// such files: those tokens outside strings become the numbers they name.

const SENTINEL = '\u0000marble-nonfinite:';

/** JSON.parse that also accepts Python's NaN, Infinity and -Infinity tokens. */
export function parsePythonJson(text: string): unknown {
  let out = '';
  let inString = false;
  let changed = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      out += c;
      if (c === '\\') out += text[++i] ?? '';
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') {
      inString = true;
      out += c;
      continue;
    }
    const rest = text.startsWith('-Infinity', i) ? '-Infinity' : text.startsWith('Infinity', i) ? 'Infinity' : text.startsWith('NaN', i) ? 'NaN' : null;
    if (rest) {
      out += JSON.stringify(SENTINEL + rest);
      i += rest.length - 1;
      changed = true;
      continue;
    }
    out += c;
  }
  if (!changed) return JSON.parse(text);
  return JSON.parse(out, (_key, value: unknown) =>
    typeof value === 'string' && value.startsWith(SENTINEL) ? Number(value.slice(SENTINEL.length)) : value,
  );
}
