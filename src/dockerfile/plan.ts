/**
 * From a Dockerfile to a build plan: stages per target platform with ARG scoping, automatic platform
 * args, variable expansion (BuildKit's rules: which instructions expand, ENV over ARG), stage
 * resolution, pruning, sharing of platform-independent stages between targets, and lint warnings.
 */
import { formatPlatform, parsePlatform, platformArgs, type Platform } from '../oci/index.js';
import { ArchwayError } from '../util/index.js';
import {
  contentKey,
  stageDependencies,
  topologicalStages,
  type BuildPlan,
  type CopySource,
  type InlineFile,
  type KeyValue,
  type Mount,
  type StageBase,
  type StageNode,
  type Step,
  type Warning,
  type WarningKind,
} from '../graph/index.js';
import { parseError, suggest } from './errors.js';
import { parseDockerfile, type Instruction } from './instructions.js';
import { processWord, processWords, ShellLexError, type EnvLookup } from './lex.js';
import { MountError, parseMount } from './mounts.js';
import { chompHeredocContent, type Heredoc } from './parser.js';

export interface PlanOptions {
  dockerfile: string;
  filename?: string;
  platforms: Platform[];
  buildPlatform: Platform;
  buildArgs?: Record<string, string>;
  target?: string;
  /**
   * The environment of a base image (its config's Env), when the caller has resolved it. Without
   * it, variables that only a base image defines expand to empty and are not warned about.
   */
  baseImageEnv?: (ref: string, platform: Platform) => Record<string, string> | undefined;
  /**
   * The ONBUILD triggers of a base image (its config's OnBuild), when the caller has resolved it.
   * They are parsed with this parser and run first in every stage built FROM that image.
   */
  baseImageOnBuild?: (ref: string, platform: Platform) => readonly string[] | undefined;
  /** The SHELL a base image was built with (its config's Shell), when the caller has resolved it. */
  baseImageShell?: (ref: string, platform: Platform) => readonly string[] | undefined;
}

export const PLATFORM_ARG_NAMES = [
  'TARGETPLATFORM',
  'TARGETOS',
  'TARGETARCH',
  'TARGETVARIANT',
  'BUILDPLATFORM',
  'BUILDOS',
  'BUILDARCH',
  'BUILDVARIANT',
] as const;
const PLATFORM_ARGS = new Set<string>(PLATFORM_ARG_NAMES);

/** BuildKit lint rule names for `# check=skip=...`. */
const RULE_NAMES: Partial<Record<WarningKind, string>> = {
  'undefined-var': 'UndefinedVar',
  'platform-arg-undeclared': 'UndefinedVar',
  'hardcoded-platform': 'FromPlatformFlagConstDisallowed',
  'legacy-key-value': 'LegacyKeyValueFormat',
  'stage-name-casing': 'StageNameCasing',
  'from-as-casing': 'FromAsCasing',
  'maintainer-deprecated': 'MaintainerDeprecated',
  'json-args-recommended': 'JSONArgsRecommended',
  'multiple-instructions': 'MultipleInstructionsDisallowed',
  'reserved-stage-name': 'ReservedStageName',
  'invalid-json': 'JSONArgsRecommended',
  'empty-continuation': 'NoEmptyContinuation',
  'pinned-digest': 'PinnedDigest',
  'from-not-stage': 'FromNotStage',
};

const SIGNALS = new Set(
  'ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ RTMIN RTMAX'.split(' '),
);

interface StageDef {
  index: number;
  name?: string;
  from: Extract<Instruction, { kind: 'from' }>;
  body: Instruction[];
}

interface StageState {
  env: Map<string, string>;
  shell: string[];
  known: boolean;
}

function defaultShell(p: Platform): string[] {
  return p.os === 'windows' ? ['cmd', '/S', '/C'] : ['/bin/sh', '-c'];
}

function isRemote(src: string): boolean {
  return /^(https?:\/\/|git:\/\/|git@|ssh:\/\/|github\.com\/)/.test(src);
}

/** Strips stage objects to their ids (and drops positions) for hashing. */
function keyable(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(keyable);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o['id'] === 'string' && Array.isArray(o['steps'])) return { stage: o['id'] };
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) {
      if (k === 'line' || k === 'column' || k === 'endLine' || k === 'text' || k === 'display' || k === 'key') continue;
      out[k] = keyable(x);
    }
    return out;
  }
  return v;
}

function normalizePorts(words: string[]): string[] | string {
  const out: string[] = [];
  for (const w of words) {
    const m = /^(\d+)(?:-(\d+))?(?:\/([a-zA-Z]+))?$/.exec(w);
    if (!m) return w;
    const proto = (m[3] ?? 'tcp').toLowerCase();
    if (!['tcp', 'udp', 'sctp'].includes(proto)) return w;
    const lo = Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : lo;
    if (lo > 65535 || hi > 65535 || hi < lo) return w;
    for (let p = lo; p <= hi; p++) out.push(`${p}/${proto}`);
  }
  return out;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}

/** Plans a build: the stages each target platform needs, with shared platform-independent stages. */
export function planBuild(opts: PlanOptions): BuildPlan {
  const file = opts.filename ?? 'Dockerfile';
  const parsed = parseDockerfile(opts.dockerfile, file);
  const warnings: Warning[] = [];
  const seenWarnings = new Set<string>();
  const warn = (kind: WarningKind, message: string, line: number, column: number): void => {
    const k = `${kind}:${line}:${column}:${message}`;
    if (seenWarnings.has(k)) return;
    seenWarnings.add(k);
    warnings.push({ kind, message, file, line, column });
  };
  for (const w of parsed.warnings) warn(w.kind, w.message, w.line, w.column);
  const buildArgs = opts.buildArgs ?? {};
  const consumedArgs = new Set<string>();
  const hasBuildArg = (k: string): boolean => {
    const has = Object.prototype.hasOwnProperty.call(buildArgs, k);
    if (has) consumedArgs.add(k);
    return has;
  };

  // split into global ARGs and stages
  const meta: Array<Extract<Instruction, { kind: 'arg' }>> = [];
  const stages: StageDef[] = [];
  for (const ins of parsed.instructions) {
    if (ins.kind === 'from') {
      const def: StageDef = { index: stages.length, from: ins, body: [] };
      if (ins.stageName !== undefined) {
        const dup = stages.find((s) => s.name === ins.stageName);
        if (dup) {
          throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, `duplicate stage name "${ins.stageName}" (first defined at line ${dup.from.line})`);
        }
        if (ins.stageName === 'scratch' || ins.stageName === 'context') {
          warn('reserved-stage-name', `stage name should not use the same name as reserved stage "${ins.stageName}"`, ins.line, ins.column);
        }
        def.name = ins.stageName;
      }
      stages.push(def);
    } else if (stages.length === 0) {
      if (ins.kind !== 'arg') {
        throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, `${ins.node.cmd} instruction before the first FROM: no build stage in current context (only ARG may come before FROM)`);
      }
      meta.push(ins);
    } else {
      (stages[stages.length - 1] as StageDef).body.push(ins);
    }
  }
  if (stages.length === 0) {
    throw parseError(file, { line: 1, column: 1 }, parsed.instructions.length === 0 ? 'the Dockerfile has no instructions' : 'the Dockerfile has no FROM instruction');
  }
  if (opts.platforms.length === 0) throw new ArchwayError('USAGE', 'planBuild: at least one target platform is required');

  let targetIndex = stages.length - 1;
  if (opts.target !== undefined && opts.target !== '') {
    const want = opts.target.toLowerCase();
    const found = stages.find((s) => s.name === want);
    if (!found) {
      const s = suggest(want, stages.map((x) => x.name).filter((x): x is string => x !== undefined));
      throw new ArchwayError('NOT_FOUND', `${file}: target stage "${opts.target}" could not be found${s ? ` (did you mean ${s}?)` : ''}`, {
        details: { file, target: opts.target },
        hint: `stages: ${stages.map((x) => x.name ?? String(x.index)).join(', ')}`,
      });
    }
    targetIndex = found.index;
  }

  const byId = new Map<string, StageNode>();
  const stateOf = new WeakMap<StageNode, StageState>();
  const multi = opts.platforms.length > 1;

  const lexError = (ins: { line: number; column: number; original: string }, e: unknown): Error => {
    if (e instanceof ShellLexError || e instanceof MountError) {
      return parseError(file, { line: ins.line, column: ins.column, source: ins.original }, e.message);
    }
    return e as Error;
  };

  const targets: BuildPlan['targets'] = [];
  for (const target of opts.platforms) {
    const globals = new Map<string, string | undefined>();
    for (const [k, v] of Object.entries({ ...platformArgs('TARGET', target), ...platformArgs('BUILD', opts.buildPlatform) })) globals.set(k, v);
    const globalLookup: EnvLookup = (n) => globals.get(n);
    for (const ins of meta) {
      const updates: Array<[string, string | undefined]> = [];
      for (const a of ins.args) {
        let v: string | undefined;
        if (hasBuildArg(a.key)) v = buildArgs[a.key];
        else if (a.value !== undefined) {
          try {
            const r = processWord(a.value, globalLookup, { escapeToken: parsed.directives.escape });
            v = r.value;
          } catch (e) {
            throw lexError(ins, e);
          }
        }
        updates.push([a.key, v]);
      }
      for (const [k, v] of updates) globals.set(k, v);
    }

    const memo = new Map<number, StageNode>();
    const visiting: number[] = [];

    const resolveStage = (index: number, ref: { line: number; column: number; original: string } | undefined): StageNode => {
      const got = memo.get(index);
      if (got) return got;
      const def = stages[index] as StageDef;
      if (visiting.includes(index)) {
        const at = ref ?? def.from;
        const cycle = [...visiting.slice(visiting.indexOf(index)), index].map((i) => stages[i]?.name ?? String(i)).join(' -> ');
        throw parseError(file, { line: at.line, column: at.column, source: at.original }, `circular dependency detected on stage: ${def.name ?? index} (${cycle})`);
      }
      visiting.push(index);
      const node = buildStage(def);
      visiting.pop();
      memo.set(index, node);
      return node;
    };

    const resolveSource = (
      text: string,
      ins: { line: number; column: number; original: string },
      current: StageDef,
      platform: Platform,
    ): CopySource => {
      if (/^\d+$/.test(text)) {
        const i = Number(text);
        if (i >= stages.length) {
          throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, `invalid stage index ${i}: the Dockerfile has ${stages.length} stage${stages.length === 1 ? '' : 's'} (0 to ${stages.length - 1})`);
        }
        if (i === current.index) {
          throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, `circular dependency detected on stage: ${current.name ?? i} (a stage can not copy from itself)`);
        }
        return { kind: 'stage', stage: resolveStage(i, ins) };
      }
      const low = text.toLowerCase();
      const st = stages.find((s) => s.name === low);
      if (st) {
        if (st.index === current.index) {
          throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, `circular dependency detected on stage: ${st.name} (a stage can not copy from itself)`);
        }
        return { kind: 'stage', stage: resolveStage(st.index, ins) };
      }
      if (text === '' || !/^[a-z0-9][a-z0-9._:/@-]*$/.test(text)) {
        throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, `"${text}" is neither a build stage nor a valid image reference`);
      }
      const s = suggest(low, stages.map((x) => x.name).filter((x): x is string => x !== undefined));
      if (s !== undefined && !/[/:@.]/.test(text)) {
        warn('from-not-stage', `"${text}" is not a build stage; it is taken as an image reference (did you mean stage "${s}"?)`, ins.line, ins.column);
      }
      return { kind: 'image', ref: text, platform };
    };

    const buildStage = (def: StageDef): StageNode => {
      const from = def.from;
      const at = { line: from.line, column: from.column, source: from.original };
      const expandGlobal = (word: string): string => {
        let r;
        try {
          r = processWord(word, globalLookup, { escapeToken: parsed.directives.escape });
        } catch (e) {
          throw lexError(from, e);
        }
        for (const n of r.unmatched) {
          if (!globals.has(n)) warn('undefined-var', `FROM uses undefined ARG "${n}" (declare it with ARG before the first FROM)`, from.line, from.column);
          else warn('undefined-var', `FROM uses ARG "${n}" which has no value (give it a default or pass --build-arg ${n}=...)`, from.line, from.column);
        }
        return r.value;
      };
      const image = expandGlobal(from.image);
      if (image === '') throw parseError(file, at, `base name (${from.image}) should not be blank`);
      let platform = target;
      let platformText: string | undefined;
      if (from.platform !== undefined) {
        platformText = expandGlobal(from.platform);
        try {
          platform = parsePlatform(platformText, opts.buildPlatform);
        } catch (e) {
          throw parseError(file, { ...at, column: columnIn(from.original, '--platform', from.column) }, `failed to parse platform "${platformText}": ${(e as Error).message}`);
        }
        if (!from.platform.includes('$') && multi) {
          warn('hardcoded-platform', `FROM --platform flag should not use a constant value ("${from.platform}") when building several platforms`, from.line, from.column);
        }
      }
      let base: StageBase;
      let state: StageState;
      const low = image.toLowerCase();
      const baseStage = stages.find((s) => s.name === low && s.index < def.index);
      if (low === 'scratch') {
        base = { kind: 'scratch' };
        state = { env: new Map(), shell: defaultShell(platform), known: true };
      } else if (baseStage) {
        const parent = resolveStage(baseStage.index, from);
        base = { kind: 'stage', stage: parent };
        platform = parent.platform;
        const ps = stateOf.get(parent) as StageState;
        state = { env: new Map(ps.env), shell: [...ps.shell], known: ps.known };
      } else {
        if (!/^[a-z0-9][a-z0-9._:/@-]*$/.test(image) || image.includes('//')) {
          throw parseError(file, at, `invalid reference format: "${image}" (repository name must be lowercase)`);
        }
        base = { kind: 'image', ref: image, platform };
        if (/@sha256:/.test(image)) {
          warn('pinned-digest', `base image "${image}" is pinned by digest; if it names a single-platform manifest, every target platform gets that one platform`, from.line, from.column);
        }
        const env = opts.baseImageEnv?.(image, platform);
        const shell = opts.baseImageShell?.(image, platform);
        state = { env: new Map(Object.entries(env ?? {})), shell: shell && shell.length > 0 ? [...shell] : defaultShell(platform), known: env !== undefined };
      }
      // ONBUILD triggers of the base run first, as if written right after FROM: from a base image's
      // config, or from the ONBUILD instructions of a base stage in this Dockerfile (BuildKit's rule).
      const triggers: Trigger[] = [];
      if (base.kind === 'image') {
        for (const text of opts.baseImageOnBuild?.(image, platform) ?? []) triggers.push(parseTrigger(file, from, text, `base image "${image}"`));
      } else if (base.kind === 'stage' && baseStage) {
        for (const ins of baseStage.body) {
          if (ins.kind === 'onbuild') triggers.push({ ins: atFrom(ins.inner, from), text: ins.trigger, source: `stage "${baseStage.name ?? baseStage.index}" (line ${ins.line})`, from });
        }
      }
      const triggerError = (e: unknown, t: Trigger): unknown => wrapTriggerError(file, e, t);
      const args = new Map<string, string | undefined>();
      const lookup: EnvLookup = (n) => state.env.get(n) ?? args.get(n);
      const baseKey =
        base.kind === 'stage'
          ? (base.stage.steps[base.stage.steps.length - 1]?.key ?? contentKey({ stageBase: base.stage.id }))
          : contentKey({ base: keyable(base), platform: formatPlatform(platform) });
      let prevKey = contentKey({ from: baseKey, platform: formatPlatform(platform) });
      const steps: Step[] = [];
      const deps: StageNode[] = [];
      const counts = new Map<string, number>();

      const checkUnmatched = (ins: Instruction, unmatched: Set<string>): void => {
        for (const n of unmatched) {
          if (PLATFORM_ARGS.has(n)) {
            warn('platform-arg-undeclared', `$${n} is used but the stage does not declare "ARG ${n}": it expands to an empty string`, ins.line, ins.column);
          } else if (state.known) {
            warn('undefined-var', `usage of undefined variable "$${n}"`, ins.line, ins.column);
          }
        }
      };
      const word = (ins: Instruction, w: string): string => {
        try {
          const r = processWord(w, lookup, { escapeToken: parsed.directives.escape });
          checkUnmatched(ins, r.unmatched);
          return r.value;
        } catch (e) {
          throw lexError(ins, e);
        }
      };
      const words = (ins: Instruction, w: string): string[] => {
        try {
          const r = processWords(w, lookup, { escapeToken: parsed.directives.escape });
          checkUnmatched(ins, r.unmatched);
          return r.words;
        } catch (e) {
          throw lexError(ins, e);
        }
      };
      const heredocFiles = (ins: Instruction, hs: Heredoc[], chmod: string | undefined, expand: boolean): InlineFile[] =>
        hs.map((h) => {
          let content = h.chomp ? chompHeredocContent(h.content) : h.content;
          if (expand && h.expand) {
            try {
              const r = processWord(content, lookup, { escapeToken: parsed.directives.escape, skipProcessQuotes: true });
              checkUnmatched(ins, r.unmatched);
              content = r.value;
            } catch (e) {
              throw lexError(ins, e);
            }
          }
          const f: InlineFile = { name: h.name, content, expand: h.expand, chomp: h.chomp };
          if (chmod !== undefined) f.chmod = chmod;
          return f;
        });
      // Steps an ONBUILD trigger brought in show as `ONBUILD RUN ...`, as in BuildKit's progress.
      let displayPrefix = '';
      const push = (ins: Instruction, display: string, step: Record<string, unknown> & { kind: Step['kind'] }): void => {
        const key = contentKey({ prev: prevKey, step: keyable(step) });
        prevKey = key;
        steps.push({ ...step, line: ins.line, column: ins.column, endLine: ins.endLine, text: ins.original, display: displayPrefix + display, key } as unknown as Step);
      };
      const addDep = (s: CopySource | undefined): void => {
        if (s?.kind === 'stage' && !deps.includes(s.stage)) deps.push(s.stage);
      };
      const scanRun = (ins: Instruction, text: string): void => {
        const re = /\$\{?(TARGETPLATFORM|TARGETOS|TARGETARCH|TARGETVARIANT|BUILDPLATFORM|BUILDOS|BUILDARCH|BUILDVARIANT)\b/g;
        for (const m of text.matchAll(re)) {
          const n = m[1] as string;
          if (!args.has(n) && !state.env.has(n)) {
            warn('platform-arg-undeclared', `$${n} is used but the stage does not declare "ARG ${n}": it is empty when the command runs`, ins.line, ins.column);
          }
        }
      };
      const firstLine = (ins: Instruction): string => oneLine(ins.original.split('\n')[0] ?? '');

      const body: Array<{ ins: Instruction; trigger?: Trigger }> = [...triggers.map((t) => ({ ins: t.ins, trigger: t })), ...def.body.map((ins) => ({ ins }))];
      for (const { ins, trigger } of body) {
        displayPrefix = trigger ? 'ONBUILD ' : '';
        try {
          if (ins.kind === 'cmd' || ins.kind === 'entrypoint' || ins.kind === 'healthcheck') {
            const c = (counts.get(ins.kind) ?? 0) + 1;
            counts.set(ins.kind, c);
            if (c === 2) warn('multiple-instructions', `multiple ${ins.kind.toUpperCase()} instructions should not be used in the same stage because only the last one will be used`, ins.line, ins.column);
          }
          switch (ins.kind) {
            case 'from':
              break;
            case 'arg': {
              const resolved: Array<{ key: string; value?: string }> = [];
              for (const a of ins.args) {
                let v: string | undefined;
                if (PLATFORM_ARGS.has(a.key) && a.value === undefined) v = globals.get(a.key) ?? platformArgs(a.key.startsWith('TARGET') ? 'TARGET' : 'BUILD', a.key.startsWith('TARGET') ? target : opts.buildPlatform)[a.key];
                else if (hasBuildArg(a.key)) v = buildArgs[a.key];
                else if (a.value !== undefined) v = word(ins, a.value);
                else v = globals.get(a.key);
                resolved.push(v === undefined ? { key: a.key } : { key: a.key, value: v });
              }
              for (const r of resolved) args.set(r.key, r.value);
              push(ins, `ARG ${ins.args.map((a) => (a.value !== undefined ? `${a.key}=${a.value}` : a.key)).join(' ')}`, { kind: 'arg', args: resolved });
              break;
            }
            case 'env':
            case 'label': {
              const pairs: KeyValue[] = ins.pairs.map((p) => ({ key: word(ins, p.key), value: word(ins, p.value) }));
              if (ins.kind === 'env') for (const p of pairs) state.env.set(p.key, p.value);
              push(ins, `${ins.kind.toUpperCase()} ${pairs.map((p) => `${p.key}=${JSON.stringify(p.value)}`).join(' ')}`, { kind: ins.kind, pairs });
              break;
            }
            case 'run': {
              const mounts: Mount[] = [];
              for (const mtext of ins.mounts) {
                let raw;
                try {
                  raw = parseMount(mtext, (v) => word(ins, v));
                } catch (e) {
                  if (e instanceof MountError) {
                    throw parseError(file, { line: ins.line, column: columnIn(ins.original, '--mount', ins.column), source: ins.original }, `invalid --mount=${mtext}: ${e.message}`);
                  }
                  throw e;
                }
                const m: Mount = { type: raw.type, target: raw.target ?? '', readonly: raw.readonly };
                if (raw.source !== undefined) m.source = raw.source;
                if (raw.from !== undefined) {
                  m.from = resolveSource(raw.from, ins, def, platform);
                  addDep(m.from);
                } else if (raw.type === 'bind') m.from = { kind: 'context' };
                if (raw.type === 'cache') {
                  m.id = raw.id ?? raw.target ?? '';
                  m.sharing = raw.sharing ?? 'shared';
                  m.mode = raw.mode ?? 0o755;
                } else if (raw.type === 'secret') {
                  const id = raw.id ?? raw.source ?? (raw.target !== undefined ? (raw.target.split('/').filter(Boolean).pop() ?? '') : (raw.env ?? ''));
                  m.id = id;
                  if (raw.target === undefined && raw.env === undefined) m.target = `/run/secrets/${id}`;
                  m.mode = raw.mode ?? 0o400;
                  m.required = raw.required;
                  if (raw.env !== undefined) m.env = raw.env;
                  delete m.source;
                } else if (raw.type === 'ssh') {
                  m.id = raw.id ?? 'default';
                  if (raw.target === undefined) m.target = `/run/buildkit/ssh_agent.${mounts.filter((x) => x.type === 'ssh').length}`;
                  m.mode = raw.mode ?? 0o600;
                  m.required = raw.required;
                } else if (raw.id !== undefined) m.id = raw.id;
                if (raw.type !== 'cache' && raw.mode !== undefined) m.mode = raw.mode;
                if (raw.uid !== undefined) m.uid = raw.uid;
                if (raw.gid !== undefined) m.gid = raw.gid;
                if (raw.size !== undefined) m.size = raw.size;
                mounts.push(m);
              }
              const network = ins.network !== undefined ? word(ins, ins.network) : 'default';
              if (!['default', 'none', 'host'].includes(network)) {
                throw parseError(file, { line: ins.line, column: columnIn(ins.original, '--network', ins.column), source: ins.original }, `unsupported network mode "${network}" (expected default, none or host)`);
              }
              const env: Record<string, string> = {};
              for (const [k, v] of args) if (v !== undefined && !state.env.has(k)) env[k] = v;
              const heredocs = heredocFiles(ins, ins.heredocs, undefined, false);
              let argv: string[];
              let script: { path: string; content: string } | undefined;
              if ('exec' in ins.command) {
                argv = ins.command.exec;
              } else {
                scanRun(ins, ins.command.shell);
                let cmd = ins.command.shell;
                const firstHd = heredocs[0];
                if (firstHd !== undefined) {
                  const onlyHeredoc = heredocs.length >= 1 && /^\d*<<-?\s*["']?[^\s"']+["']?$/.test(cmd.trim());
                  if (onlyHeredoc) {
                    if (platform.os !== 'windows' && firstHd.content.startsWith('#!')) {
                      script = { path: `/dev/pipes/${firstHd.name}`, content: firstHd.content };
                      cmd = '';
                    } else cmd = firstHd.content;
                  } else {
                    for (const h of ins.heredocs) cmd += '\n' + h.content + h.name;
                  }
                }
                argv = script ? [script.path] : [...state.shell, cmd];
              }
              const step: Record<string, unknown> & { kind: 'run' } = {
                kind: 'run',
                command: ins.command,
                args: argv,
                shell: [...state.shell],
                env,
                mounts,
                network,
                security: ins.security === 'insecure' ? 'insecure' : 'sandbox',
                heredocs,
              };
              if (script) step['script'] = script;
              const flagText = [...mounts.map((m) => `--mount=type=${m.type},target=${m.target}`), ...(network !== 'default' ? [`--network=${network}`] : [])].join(' ');
              const cmdText = 'exec' in ins.command ? JSON.stringify(ins.command.exec) : oneLine(ins.command.shell);
              push(ins, `RUN ${flagText ? flagText + ' ' : ''}${cmdText}`, step);
              break;
            }
            case 'copy':
            case 'add': {
              const chown = ins.chown !== undefined ? word(ins, ins.chown) : undefined;
              const chmod = ins.chmod !== undefined ? word(ins, ins.chmod) : undefined;
              const srcs = ins.sources.map((s) => word(ins, s));
              const dest = word(ins, ins.dest);
              const exclude = ins.exclude.map((s) => word(ins, s));
              const heredocs = heredocFiles(ins, ins.heredocSources, chmod, true);
              const step: Record<string, unknown> & { kind: 'copy' | 'add' } = { kind: ins.kind, dest, link: ins.link, exclude, heredocs };
              if (chown !== undefined) step['chown'] = chown;
              if (chmod !== undefined) step['chmod'] = chmod;
              let fromText = '';
              if (ins.kind === 'copy') {
                let from: CopySource = { kind: 'context' };
                if (ins.from !== undefined) {
                  const f = word(ins, ins.from);
                  from = resolveSource(f, ins, def, platform);
                  fromText = `--from=${from.kind === 'stage' ? (from.stage.name ?? String(from.stage.index)) : f} `;
                }
                addDep(from);
                step['sources'] = srcs;
                step['from'] = from;
                step['parents'] = ins.parents;
              } else {
                step['sources'] = srcs.filter((s) => !isRemote(s));
                step['urls'] = srcs.filter(isRemote);
                step['from'] = { kind: 'context' };
                step['keepGitDir'] = ins.keepGitDir;
                if (ins.unpack !== undefined) step['unpack'] = ins.unpack;
                if (ins.checksum !== undefined) {
                  const c = word(ins, ins.checksum);
                  if (srcs.length !== 1 || !isRemote(srcs[0] as string)) {
                    throw parseError(file, { line: ins.line, column: columnIn(ins.original, '--checksum', ins.column), source: ins.original }, 'checksum requires a single source that is an HTTP URL or a Git repository');
                  }
                  if (!/^(sha256|sha384|sha512):[0-9a-f]+$/.test(c)) {
                    throw parseError(file, { line: ins.line, column: columnIn(ins.original, '--checksum', ins.column), source: ins.original }, `invalid checksum digest format "${c}" (expected sha256:<hex>)`);
                  }
                  step['checksum'] = c;
                }
              }
              const shown = [...srcs, ...heredocs.map((h) => `<<${h.name}`)];
              push(ins, `${ins.kind.toUpperCase()} ${fromText}${shown.join(' ')} ${dest}`, step);
              break;
            }
            case 'workdir': {
              const path = word(ins, ins.path);
              push(ins, `WORKDIR ${path}`, { kind: 'workdir', path });
              break;
            }
            case 'user': {
              const user = word(ins, ins.user);
              push(ins, `USER ${user}`, { kind: 'user', user });
              break;
            }
            case 'expose': {
              const ws = ins.ports.flatMap((p) => words(ins, p));
              const ports = normalizePorts(ws);
              if (typeof ports === 'string') {
                throw parseError(file, { line: ins.line, column: columnIn(ins.original, ports, ins.column), source: ins.original }, `invalid port "${ports}" in EXPOSE (expected PORT[-PORT][/tcp|udp|sctp])`);
              }
              push(ins, `EXPOSE ${ports.join(' ')}`, { kind: 'expose', ports });
              break;
            }
            case 'volume': {
              const paths = ins.paths.map((p) => word(ins, p));
              if (paths.some((p) => p.trim() === '')) throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, 'VOLUME specified can not be an empty string');
              push(ins, `VOLUME ${JSON.stringify(paths)}`, { kind: 'volume', paths });
              break;
            }
            case 'stopsignal': {
              const signal = word(ins, ins.signal);
              const name = signal.toUpperCase().replace(/^SIG/, '');
              if (!/^\d+$/.test(signal) && !SIGNALS.has(name) && !/^RTM(IN|AX)[+-]\d+$/.test(name)) {
                throw parseError(file, { line: ins.line, column: ins.column, source: ins.original }, `Invalid signal: ${signal}`);
              }
              push(ins, `STOPSIGNAL ${signal}`, { kind: 'stopsignal', signal });
              break;
            }
            case 'shell':
              state.shell = [...ins.shell];
              push(ins, `SHELL ${JSON.stringify(ins.shell)}`, { kind: 'shell', shell: [...ins.shell] });
              break;
            case 'cmd':
            case 'entrypoint': {
              const argv = 'exec' in ins.command ? ins.command.exec : [...state.shell, ins.command.shell];
              if ('shell' in ins.command) scanRun(ins, ins.command.shell);
              push(ins, `${ins.kind.toUpperCase()} ${JSON.stringify(argv)}`, { kind: ins.kind, command: ins.command, args: argv });
              break;
            }
            case 'healthcheck': {
              const step: Record<string, unknown> & { kind: 'healthcheck' } = { kind: 'healthcheck', test: ins.test };
              for (const k of ['interval', 'timeout', 'startPeriod', 'startInterval', 'retries'] as const) if (ins[k] !== undefined) step[k] = ins[k];
              push(ins, oneLine(ins.original), step);
              break;
            }
            case 'onbuild':
              push(ins, `ONBUILD ${oneLine(ins.trigger)}`, { kind: 'onbuild', instruction: ins.trigger });
              break;
            case 'maintainer':
              push(ins, `MAINTAINER ${ins.maintainer}`, { kind: 'maintainer', maintainer: ins.maintainer });
              break;
          }
          void firstLine;
        } catch (e) {
          if (trigger) throw triggerError(e, trigger);
          throw e;
        }
      }

      if (base.kind === 'stage' && !deps.includes(base.stage)) deps.unshift(base.stage);
      const id = contentKey({ last: prevKey, name: def.name, index: def.index, platform: formatPlatform(platform) });
      const existing = byId.get(id);
      if (existing) return existing;
      const node: StageNode = {
        id,
        index: def.index,
        platform,
        base,
        steps,
        targetPlatforms: [],
        line: from.line,
        column: from.column,
        text: from.original,
        display: `FROM ${platformText !== undefined ? `--platform=${platformText} ` : ''}${image}${def.name !== undefined ? ` AS ${def.name}` : ''}`,
        baseEnvKnown: state.known,
        deps: deps.map((d) => d.id),
      };
      if (def.name !== undefined) node.name = def.name;
      byId.set(id, node);
      stateOf.set(node, state);
      return node;
    };

    const root = resolveStage(targetIndex, undefined);
    targets.push({ platform: target, stage: root });
    const mark = (s: StageNode, seen: Set<string>): void => {
      if (seen.has(s.id)) return;
      seen.add(s.id);
      if (!s.targetPlatforms.some((p) => formatPlatform(p) === formatPlatform(target))) s.targetPlatforms.push(target);
      for (const d of stageDependencies(s)) mark(d, seen);
    };
    mark(root, new Set());
  }

  // # check=skip=...;error=true
  const check = parsed.directives.check;
  let kept = warnings;
  if (check) {
    const skip = new Set(check.skip.map((s) => s.toLowerCase()));
    if (!skip.has('all')) {
      kept = warnings.filter((w) => !skip.has((RULE_NAMES[w.kind] ?? w.kind).toLowerCase()) && !skip.has(w.kind));
    } else kept = [];
    const first = kept[0];
    if (check.error && first) {
      throw parseError(file, { line: first.line, column: first.column }, `lint error (check=error=true): ${first.message}`);
    }
  }
  // BuildKit's predefined args are used without an ARG; anything else a --build-arg names that no
  // ARG declared is most likely a typo, which BuildKit warns about too.
  const unusedBuildArgs = Object.keys(buildArgs)
    .filter((k) => !consumedArgs.has(k) && !PREDEFINED_ARGS.has(k) && !k.startsWith('BUILDKIT_'))
    .sort();
  return { targets, stages: topologicalStages(targets.map((t) => t.stage)), warnings: kept, ...(unusedBuildArgs.length > 0 ? { unusedBuildArgs } : {}) };
}

/** Build args BuildKit knows without an ARG: the proxies (either case) and SOURCE_DATE_EPOCH. */
const PREDEFINED_ARGS = new Set(['HTTP_PROXY', 'HTTPS_PROXY', 'FTP_PROXY', 'NO_PROXY', 'ALL_PROXY', 'SOURCE_DATE_EPOCH'].flatMap((k) => [k, k.toLowerCase()]));

/** An ONBUILD trigger to run at the start of a stage: the instruction, its text, where it came from. */
interface Trigger {
  ins: Instruction;
  text: string;
  /** `base image "app:1"` or `stage "base" (line 3)`. */
  source: string;
  from: Extract<Instruction, { kind: 'from' }>;
}

/** The instruction placed at the FROM that brought it in: that is where its errors point. */
function atFrom(ins: Instruction, from: Extract<Instruction, { kind: 'from' }>): Instruction {
  return { ...ins, line: from.line, column: from.column, endLine: from.endLine, original: from.original };
}

/** Parses one trigger of a base image's OnBuild list with the Dockerfile parser. */
function parseTrigger(file: string, from: Extract<Instruction, { kind: 'from' }>, text: string, source: string): Trigger {
  const at = { line: from.line, column: from.column, source: from.original };
  const t = { text, source, from };
  let parsed;
  try {
    parsed = parseDockerfile(text, 'ONBUILD');
  } catch (e) {
    throw wrapTriggerError(file, e, { ...t, ins: from });
  }
  const only = parsed.instructions[0];
  if (only === undefined || parsed.instructions.length !== 1) {
    throw parseError(file, at, `ONBUILD trigger ${JSON.stringify(text)} from ${source}: a trigger must be exactly one instruction`);
  }
  if (only.kind === 'from' || only.kind === 'maintainer' || only.kind === 'onbuild') {
    const what = only.kind === 'onbuild' ? 'Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed' : `${only.node.cmd} isn't allowed as an ONBUILD trigger`;
    throw parseError(file, at, `ONBUILD trigger ${JSON.stringify(text)} from ${source}: ${what}`);
  }
  return { ...t, ins: atFrom(only, from) };
}

/** Rewrites an error met while planning a trigger so it names the trigger and its base, at the FROM line. */
function wrapTriggerError(file: string, e: unknown, t: Trigger): unknown {
  if (!(e instanceof ArchwayError)) return e;
  // Drop the inner `file:line:col: ` prefix and the quoted source lines: they point into the trigger text.
  const first = (e.message.split('\n')[0] ?? '').replace(/^.*?:\d+:\d+: /, '');
  const message = `ONBUILD trigger ${JSON.stringify(t.text)} from ${t.source}: ${first}`;
  const at = { line: t.from.line, column: t.from.column, source: t.from.original };
  if (e.code === 'PARSE') return parseError(file, at, message, e.hint);
  return new ArchwayError(e.code, `${file}:${t.from.line}:${t.from.column}: ${message}`, { details: { ...e.details, file, line: t.from.line, column: t.from.column }, ...(e.hint ? { hint: e.hint } : {}) });
}

function columnIn(original: string, needle: string, fallback: number): number {
  const first = original.split('\n')[0] ?? '';
  const i = first.indexOf(needle);
  return i >= 0 ? i + 1 : fallback;
}
