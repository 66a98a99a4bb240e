/** RUN --mount parsing and validation, after BuildKit's instructions/commands_runmount.go. */
import type { MountType } from '../graph/index.js';
import { suggest } from './errors.js';

export interface RawMount {
  type: MountType;
  target?: string;
  source?: string;
  from?: string;
  readonly: boolean;
  id?: string;
  sharing?: 'shared' | 'private' | 'locked';
  mode?: number;
  uid?: number;
  gid?: number;
  required: boolean;
  size?: number;
  env?: string;
}

const MOUNT_TYPES: MountType[] = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'];
const ALL_KEYS = ['type', 'from', 'source', 'target', 'readonly', 'id', 'sharing', 'required', 'size', 'mode', 'uid', 'gid', 'src', 'dst', 'destination', 'ro', 'rw', 'readwrite', 'env'];

/** A mount error (the caller adds the position). */
export class MountError extends Error {
  override name = 'MountError';
}

/** Go's encoding/csv for one record: comma separated, `"` quoting with `""` as a literal quote. */
export function splitCsv(text: string): string[] {
  const out: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  let fieldStart = true;
  while (i < text.length) {
    const ch = text[i] as string;
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        continue;
      }
      field += ch;
      i++;
      continue;
    }
    if (ch === '"' && fieldStart) {
      quoted = true;
      fieldStart = false;
      i++;
      continue;
    }
    if (ch === ',') {
      out.push(field);
      field = '';
      fieldStart = true;
      i++;
      continue;
    }
    field += ch;
    fieldStart = false;
    i++;
  }
  if (quoted) throw new MountError(`extraneous or missing " in quoted-field: ${text}`);
  out.push(field);
  return out;
}

function parseBool(key: string, v: string): boolean {
  const s = v.toLowerCase();
  if (['1', 't', 'true'].includes(s)) return true;
  if (['0', 'f', 'false'].includes(s)) return false;
  throw new MountError(`invalid value for ${key}: ${v}`);
}

/** docker/go-units RAMInBytes: `64m`, `1g`, `512KiB`, plain bytes. */
export function ramInBytes(v: string): number {
  const m = /^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$/.exec(v);
  if (!m) throw new MountError(`invalid size: '${v}'`);
  const mult: Record<string, number> = { k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };
  return Math.floor(Number(m[1]) * (m[2] ? (mult[m[2].toLowerCase()] as number) : 1));
}

/**
 * Parses one --mount value. With `expand`, each value is expanded first and every rule is checked;
 * without it (parse time), values with `$` are not judged yet, as BuildKit defers them.
 */
export function parseMount(text: string, expand?: (value: string) => string): RawMount {
  const m: RawMount = { type: 'bind', readonly: true, required: false };
  let roAuto = true;
  let sharingSet = false;
  const deferred = (v: string): boolean => expand === undefined && v.includes('$');
  for (const field of splitCsv(text)) {
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase().trim();
    if (eq < 0) {
      switch (key) {
        case 'readonly':
        case 'ro':
          m.readonly = true;
          roAuto = false;
          continue;
        case 'readwrite':
        case 'rw':
          m.readonly = false;
          roAuto = false;
          continue;
        case 'required':
          if (m.type === 'secret' || m.type === 'ssh') {
            m.required = true;
            continue;
          }
          throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
        default:
          throw new MountError(`invalid field '${field}' must be a key=value pair`);
      }
    }
    let value = field.slice(eq + 1);
    if (expand) value = expand(value);
    if (deferred(value)) {
      if (key === 'type') throw new MountError(`mount type can not contain variables: '${value}'`);
      if (!ALL_KEYS.includes(key)) throw unexpectedKey(key, field);
      continue;
    }
    switch (key) {
      case 'type': {
        const t = value.toLowerCase();
        if (!(MOUNT_TYPES as string[]).includes(t)) {
          const s = suggest(t, MOUNT_TYPES);
          throw new MountError(`unsupported mount type "${value}"${s ? ` (did you mean ${s}?)` : ''}`);
        }
        m.type = t as MountType;
        break;
      }
      case 'from':
        m.from = value;
        break;
      case 'source':
      case 'src':
        m.source = value;
        break;
      case 'target':
      case 'dst':
      case 'destination':
        m.target = value;
        break;
      case 'readonly':
      case 'ro':
        m.readonly = parseBool(key, value);
        roAuto = false;
        break;
      case 'readwrite':
      case 'rw':
        m.readonly = !parseBool(key, value);
        roAuto = false;
        break;
      case 'required':
        if (m.type !== 'secret' && m.type !== 'ssh') throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
        m.required = parseBool(key, value);
        break;
      case 'id':
        m.id = value;
        break;
      case 'sharing': {
        const s = value.toLowerCase();
        if (value !== '' && s !== 'shared' && s !== 'private' && s !== 'locked') throw new MountError(`unsupported sharing value "${value}"`);
        if (s !== '') m.sharing = s as 'shared' | 'private' | 'locked';
        sharingSet = true;
        break;
      }
      case 'mode':
        if (!/^[0-7]+$/.test(value)) throw new MountError(`invalid value ${value} for mode`);
        m.mode = parseInt(value, 8);
        break;
      case 'uid':
      case 'gid':
        if (!/^\d+$/.test(value)) throw new MountError(`invalid value for ${key}: ${value}`);
        m[key] = Number(value);
        break;
      case 'env':
        m.env = value;
        break;
      case 'size':
        if (m.type !== 'tmpfs') throw new MountError(`unexpected key 'size' for mount type '${m.type}'`);
        m.size = ramInBytes(value);
        break;
      default:
        throw unexpectedKey(key, field);
    }
  }
  if (roAuto) m.readonly = !(m.type === 'cache' || m.type === 'tmpfs');
  if (sharingSet && m.type !== 'cache') throw new MountError(`invalid cache sharing set for ${m.type} mount`);
  if (m.type === 'secret') {
    if (m.from !== undefined) throw new MountError('secret mount should not have a from');
    if (m.source === undefined && m.target === undefined && m.id === undefined && m.env === undefined) {
      throw new MountError('one of source, target required');
    }
    if (m.source !== undefined && m.id !== undefined) throw new MountError("both source and id can't be set");
  }
  if (m.type === 'tmpfs' && m.from !== undefined) throw new MountError('tmpfs mount should not have a from');
  if (m.type === 'ssh' && m.from !== undefined) throw new MountError('ssh mount should not have a from');
  if (m.env !== undefined && m.type !== 'secret') throw new MountError(`unexpected key 'env' for mount type '${m.type}'`);
  if ((m.type === 'bind' || m.type === 'cache' || m.type === 'tmpfs') && expand !== undefined && (m.target === undefined || m.target === '')) {
    throw new MountError(`mount type=${m.type} requires a target`);
  }
  if (m.target !== undefined && expand !== undefined && (m.target === '/' || m.target.replace(/\/+$/, '') === '')) {
    throw new MountError(`invalid mount target "${m.target}"`);
  }
  return m;
}

function unexpectedKey(key: string, field: string): MountError {
  const s = suggest(key, ALL_KEYS);
  return new MountError(`unexpected key '${key}' in '${field}'${s ? ` (did you mean ${s}?)` : ''}`);
}
