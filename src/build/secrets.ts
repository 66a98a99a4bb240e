/**
 * Build secrets (`--secret id=ID,src=FILE`, `--secret id=ID,env=VAR`), after buildx's parser and
 * BuildKit's file/env secret store. Values are read once at the start of a build, kept in memory,
 * and reach a RUN step only through RUN --mount=type=secret: never a layer, a cache key or a log.
 */
import { promises as fs } from 'node:fs';
import { ArchwayError, errorMessage } from '../util/index.js';
import { splitCsv } from '../dockerfile/index.js';

/** BuildKit's limit for one secret. */
export const MAX_SECRET_SIZE = 500 * 1024;

export interface SecretSpec {
  id: string;
  /** Read the value from this file. */
  file?: string;
  /** Read the value from this environment variable. */
  env?: string;
}

/**
 * Parses one --secret value: `id=ID[,src=FILE|,source=FILE][,env=VAR][,type=file|env]`. With
 * neither src nor env, the value comes from the variable ID when it is set, else from the file ID.
 */
export function parseSecretSpec(text: string): SecretSpec {
  let fields: string[];
  try {
    fields = splitCsv(text);
  } catch (e) {
    throw new ArchwayError('USAGE', `--secret "${text}": ${errorMessage(e)}`);
  }
  const spec: { id?: string; file?: string; env?: string } = {};
  let type: string | undefined;
  for (const field of fields) {
    const eq = field.indexOf('=');
    if (eq < 0) throw new ArchwayError('USAGE', `--secret "${text}": invalid field '${field}' must be a key=value pair`);
    const key = field.slice(0, eq).trim().toLowerCase();
    const value = field.slice(eq + 1);
    switch (key) {
      case 'type':
        if (value !== 'file' && value !== 'env') throw new ArchwayError('USAGE', `--secret "${text}": unsupported secret type "${value}" (file or env)`);
        type = value;
        break;
      case 'id':
        spec.id = value;
        break;
      case 'src':
      case 'source':
        spec.file = value;
        break;
      case 'env':
        spec.env = value;
        break;
      default:
        throw new ArchwayError('USAGE', `--secret "${text}": unexpected key '${key}' (expected id, src, env or type)`);
    }
  }
  if (type === 'env' && spec.env === undefined && spec.file !== undefined) {
    spec.env = spec.file;
    delete spec.file;
  }
  if (!spec.id) throw new ArchwayError('USAGE', `--secret "${text}": an id is required (id=NAME)`);
  const out: SecretSpec = { id: spec.id };
  if (spec.file !== undefined) out.file = spec.file;
  if (spec.env !== undefined) out.env = spec.env;
  return out;
}

/** Reads every secret's value; a missing file or variable is a usage error naming the secret. */
export async function loadSecrets(specs: readonly SecretSpec[], env: NodeJS.ProcessEnv): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const s of specs) {
    let value: Buffer;
    let env_ = s.env;
    let file = s.file;
    if (env_ === undefined && file === undefined) {
      if (env[s.id] !== undefined) env_ = s.id;
      else file = s.id;
    }
    if (file !== undefined) {
      let st;
      try {
        st = await fs.stat(file);
      } catch (e) {
        throw new ArchwayError('USAGE', `secret "${s.id}": cannot read ${file}: ${errorMessage(e)}`, { hint: 'give the file with --secret id=ID,src=FILE' });
      }
      if (!st.isFile()) throw new ArchwayError('USAGE', `secret "${s.id}": ${file} is not a file`);
      if (st.size > MAX_SECRET_SIZE) throw new ArchwayError('USAGE', `secret "${s.id}" is too big (${st.size} bytes, at most ${MAX_SECRET_SIZE})`);
      value = await fs.readFile(file);
    } else {
      const v = env[env_ as string];
      if (v === undefined) throw new ArchwayError('USAGE', `secret "${s.id}": the environment variable ${env_ ?? ''} is not set`);
      value = Buffer.from(v, 'utf8');
      if (value.length > MAX_SECRET_SIZE) throw new ArchwayError('USAGE', `secret "${s.id}" is too big (${value.length} bytes, at most ${MAX_SECRET_SIZE})`);
    }
    out.set(s.id, value);
  }
  return out;
}
