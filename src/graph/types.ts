import type { Platform } from '../oci/index.js';

/** Kinds of warnings a plan carries (each maps to a BuildKit lint rule where one exists). */
export type WarningKind =
  | 'platform-arg-undeclared' // $TARGETARCH used in a stage without `ARG TARGETARCH`
  | 'hardcoded-platform' // FROM --platform=linux/amd64 while building several platforms
  | 'undefined-var' // $X referenced but never defined
  | 'pinned-digest' // base image pinned by @sha256:
  | 'invalid-json' // RUN/CMD/ENTRYPOINT [..] not valid JSON: taken as shell form
  | 'empty-continuation' // empty line inside a continuation (deprecated)
  | 'legacy-key-value' // ENV key value / LABEL key value
  | 'stage-name-casing' // FROM x AS Name
  | 'from-as-casing' // `FROM x as y` with an uppercase FROM
  | 'maintainer-deprecated'
  | 'json-args-recommended' // CMD/ENTRYPOINT in shell form
  | 'multiple-instructions' // several CMD/ENTRYPOINT/HEALTHCHECK in one stage
  | 'from-not-stage' // --from names no stage: taken as an image
  | 'reserved-stage-name';

export interface Warning {
  kind: WarningKind;
  message: string;
  file: string;
  line: number;
  column: number;
}

/** Where a COPY/ADD/mount takes its files from. */
export type CopySource =
  | { kind: 'context' }
  | { kind: 'stage'; stage: StageNode }
  | { kind: 'image'; ref: string; platform: Platform };

export type StageBase =
  | { kind: 'scratch' }
  | { kind: 'image'; ref: string; platform: Platform }
  | { kind: 'stage'; stage: StageNode };

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';

/** A RUN --mount, expanded and validated, with BuildKit's defaults filled in. */
export interface Mount {
  type: MountType;
  /** Absolute path in the container. */
  target: string;
  /** Path inside `from` (bind, cache), default `/`. */
  source?: string;
  /** bind/cache: where the files come from (context by default for bind, nothing for cache). */
  from?: CopySource;
  readonly: boolean;
  /** cache: the cache id (defaults to target); secret/ssh: the id (secret: basename of target; ssh: `default`). */
  id?: string;
  /** cache only. */
  sharing?: 'shared' | 'private' | 'locked';
  mode?: number;
  uid?: number;
  gid?: number;
  /** secret/ssh: fail when missing. */
  required?: boolean;
  /** tmpfs: size in bytes. */
  size?: number;
  /** secret: expose as this environment variable instead of (or as well as) a file. */
  env?: string;
}

/** An inline file from a heredoc (`RUN <<EOF`, `COPY <<EOF /dst`). */
export interface InlineFile {
  name: string;
  /** Content after `<<-` tab stripping and (when the delimiter is unquoted, for COPY/ADD) expansion. */
  content: string;
  /** The delimiter was unquoted (content subject to expansion). */
  expand: boolean;
  /** `<<-`: leading tabs stripped. */
  chomp: boolean;
  chmod?: string;
}

export type CommandForm = { shell: string } | { exec: string[] };

interface StepCommon {
  line: number;
  column: number;
  endLine: number;
  /** The instruction as written (all its lines). */
  text: string;
  /** The instruction with variables expanded, one line, for progress output. */
  display: string;
  /** Content key of the stage state after this step (base key + all steps so far). */
  key: string;
}

export interface RunStep extends StepCommon {
  kind: 'run';
  command: CommandForm;
  /** The argv to execute (SHELL prepended for shell form; heredoc handling as BuildKit does). */
  args: string[];
  /** The SHELL in effect. */
  shell: string[];
  /** Build args in scope, given to the command's environment, not persisted in the image. */
  env: Record<string, string>;
  mounts: Mount[];
  network: 'default' | 'none' | 'host';
  security: 'sandbox' | 'insecure';
  heredocs: InlineFile[];
  /** `RUN <<EOF` with a `#!` script: the file to mount read-only (mode 0755) and run. */
  script?: { path: string; content: string };
}

export interface CopyStep extends StepCommon {
  kind: 'copy';
  sources: string[];
  dest: string;
  from: CopySource;
  chown?: string;
  chmod?: string;
  link: boolean;
  exclude: string[];
  parents: boolean;
  heredocs: InlineFile[];
}

export interface AddStep extends StepCommon {
  kind: 'add';
  /** Local sources (relative to the context). */
  sources: string[];
  /** Remote sources: http(s) URLs and git repositories. */
  urls: string[];
  dest: string;
  from: { kind: 'context' };
  chown?: string;
  chmod?: string;
  link: boolean;
  exclude: string[];
  checksum?: string;
  keepGitDir: boolean;
  /** --unpack: undefined means the default (local archives are unpacked, URLs are not). */
  unpack?: boolean;
  heredocs: InlineFile[];
}

export interface KeyValue {
  key: string;
  value: string;
}

export interface EnvStep extends StepCommon {
  kind: 'env';
  pairs: KeyValue[];
}
export interface WorkdirStep extends StepCommon {
  kind: 'workdir';
  /** As written after expansion; relative paths are relative to the previous WORKDIR. */
  path: string;
}
export interface UserStep extends StepCommon {
  kind: 'user';
  user: string;
}
export interface LabelStep extends StepCommon {
  kind: 'label';
  pairs: KeyValue[];
}
export interface ExposeStep extends StepCommon {
  kind: 'expose';
  /** Normalized `port/proto` (`80/tcp`); ranges are expanded. */
  ports: string[];
}
export interface VolumeStep extends StepCommon {
  kind: 'volume';
  paths: string[];
}
export interface StopSignalStep extends StepCommon {
  kind: 'stopsignal';
  signal: string;
}
export interface HealthcheckStep extends StepCommon {
  kind: 'healthcheck';
  /** The image config's Healthcheck.Test: ["NONE"], ["CMD", ...] or ["CMD-SHELL", cmd]. */
  test: string[];
  /** Durations in nanoseconds (as the image config stores them); undefined when not given. */
  interval?: number;
  timeout?: number;
  startPeriod?: number;
  startInterval?: number;
  retries?: number;
}
export interface EntrypointStep extends StepCommon {
  kind: 'entrypoint';
  command: CommandForm;
  /** The value for the image config: exec form as written, shell form as [...SHELL, cmd]. */
  args: string[];
}
export interface CmdStep extends StepCommon {
  kind: 'cmd';
  command: CommandForm;
  args: string[];
}
export interface ShellStep extends StepCommon {
  kind: 'shell';
  shell: string[];
}
export interface OnbuildStep extends StepCommon {
  kind: 'onbuild';
  /** The trigger instruction, unexpanded (as stored in the image config's OnBuild). */
  instruction: string;
}
export interface ArgStep extends StepCommon {
  kind: 'arg';
  /** Recorded for history: the declared names and their resolved values (undefined: no value). */
  args: Array<{ key: string; value?: string }>;
}
export interface MaintainerStep extends StepCommon {
  kind: 'maintainer';
  maintainer: string;
}

export type Step =
  | RunStep
  | CopyStep
  | AddStep
  | EnvStep
  | WorkdirStep
  | UserStep
  | LabelStep
  | ExposeStep
  | VolumeStep
  | StopSignalStep
  | HealthcheckStep
  | EntrypointStep
  | CmdStep
  | ShellStep
  | OnbuildStep
  | ArgStep
  | MaintainerStep;

export type StepKind = Step['kind'];

export interface StageNode {
  /** Content key: a hash of the stage's name, index, platform, base and steps (not of line numbers). */
  id: string;
  /** Stage name from `FROM ... AS name` (lowercased, as BuildKit does). */
  name?: string;
  /** Position of the stage in the Dockerfile (0-based, as `COPY --from=0`). */
  index: number;
  /** The platform the stage runs on (BUILDPLATFORM for `FROM --platform=$BUILDPLATFORM`). */
  platform: Platform;
  base: StageBase;
  steps: Step[];
  /** The target platforms whose build includes this stage. */
  targetPlatforms: Platform[];
  /** Position of the FROM instruction. */
  line: number;
  column: number;
  /** The FROM instruction as written. */
  text: string;
  /** The FROM instruction expanded. */
  display: string;
  /** Whether the base's environment was known when expanding (false: base image env not given to the planner). */
  baseEnvKnown: boolean;
  /** Ids of the stages this one needs (base and --from/mount sources). */
  deps: string[];
}

export interface BuildTarget {
  platform: Platform;
  stage: StageNode;
}

export interface BuildPlan {
  targets: BuildTarget[];
  /** Unique stages, dependencies before dependents. */
  stages: StageNode[];
  warnings: Warning[];
  /** --build-arg names no ARG of the Dockerfile declared (proxies and BUILDKIT_* aside), sorted. */
  unusedBuildArgs?: string[];
}
