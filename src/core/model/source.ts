// Where a model's files come from, in any runtime: a folder path (Node,
// Deno, Bun), a URL (fetched; file: URLs read where the runtime has files),
// or a map from relative file names to bytes (what a bundler, a KV store or
// workerd's data modules give). The loaders read config.json,
// diffusion_pytorch_model.safetensors, scheduler_config.json through this one
// interface, and stream the weights (see weights_stream.ts).
import { ConfigError, InputError, SourceError } from '../errors.js';
import { host } from '../host.js';

/** One file's bytes, as the web platform hands them out. */
export type FileBytes = Uint8Array | ArrayBuffer | Response | Blob;

/** Relative file names ('unet/config.json', ...) to their bytes. */
export type FileMap = Record<string, FileBytes | Promise<FileBytes>> | Map<string, FileBytes | Promise<FileBytes>>;

/** A folder path, a URL (or URL string), or a map of file names to bytes. */
export type ModelSource = string | URL | FileMap;

export interface FetchProgress {
  /** The file's name within the source ('unet/diffusion_pytorch_model.safetensors'). */
  file: string;
  loaded: number;
  /** Bytes in all, when the server said (Content-Length). */
  total: number | null;
}

export interface SourceOptions {
  /** Called as the weights arrive (a few times per megabyte at most). */
  onProgress?: (progress: FetchProgress) => void;
  /** Aborts a download or a load in progress. */
  signal?: AbortSignal;
  /** The fetch to use for URLs (default: globalThis.fetch), e.g. one that adds headers. */
  fetch?: (input: URL, init?: { signal?: AbortSignal }) => Promise<Response>;
}

/** An opened file: its size where known, and its bytes whole or as a stream. */
export interface OpenedFile {
  size: number | null;
  body: Uint8Array | ReadableStream<Uint8Array>;
}

/** A folder of files, wherever it lives. */
export interface FileSource {
  /** The file's full name, for messages (a path or a URL). */
  describe(name: string): string;
  /** The file, or null when the source has none of that name. */
  open(name: string, signal?: AbortSignal): Promise<OpenedFile | null>;
  /** The same source one folder down ('unet'). */
  sub(folder: string): FileSource;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  return new DOMException(typeof reason === 'string' ? reason : 'loading was aborted', 'AbortError');
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

async function bytesOf(value: FileBytes, what: string): Promise<OpenedFile> {
  if (value instanceof Uint8Array) return { size: value.length, body: value };
  if (value instanceof ArrayBuffer) return { size: value.byteLength, body: new Uint8Array(value) };
  if (ArrayBuffer.isView(value)) return { size: value.byteLength, body: new Uint8Array(value.buffer, value.byteOffset, value.byteLength) };
  if (typeof Response === 'function' && value instanceof Response) {
    if (!value.ok) throw new SourceError(`${what}: the Response given has HTTP status ${value.status}`);
    return responseFile(value);
  }
  if (typeof Blob === 'function' && value instanceof Blob) return { size: value.size, body: value.stream() };
  throw new InputError(`${what}: expected a Uint8Array, ArrayBuffer, Response or Blob, got ${Object.prototype.toString.call(value)}`);
}

function responseFile(response: Response): OpenedFile {
  const header = response.headers.get('content-length');
  const length = header === null || header.trim() === '' ? NaN : Number(header);
  // A compressed transfer's Content-Length counts compressed bytes: unknown then.
  const encoded = (response.headers.get('content-encoding') ?? 'identity') !== 'identity';
  const size = Number.isSafeInteger(length) && length >= 0 && !encoded ? length : null;
  if (!response.body) return { size: 0, body: new Uint8Array(0) };
  return { size, body: response.body };
}

function normalizeName(name: string): string {
  return name.replace(/^\.\//, '').replace(/^\/+/, '');
}

class MapSource implements FileSource {
  constructor(
    private readonly files: Map<string, FileBytes | Promise<FileBytes>>,
    private readonly prefix = '',
  ) {}
  describe(name: string): string {
    return `${this.prefix}${name}`;
  }
  async open(name: string): Promise<OpenedFile | null> {
    const value = this.files.get(`${this.prefix}${name}`);
    return value === undefined ? null : bytesOf(await value, this.describe(name));
  }
  sub(folder: string): FileSource {
    return new MapSource(this.files, `${this.prefix}${folder}/`);
  }
}

class UrlSource implements FileSource {
  constructor(
    private readonly base: URL,
    private readonly fetchFile: NonNullable<SourceOptions['fetch']>,
  ) {}
  describe(name: string): string {
    return new URL(name, this.base).href;
  }
  async open(name: string, signal?: AbortSignal): Promise<OpenedFile | null> {
    const url = new URL(name, this.base);
    let response: Response;
    try {
      response = await this.fetchFile(url, { signal });
    } catch (e) {
      throwIfAborted(signal);
      throw new SourceError(`cannot fetch ${url.href}: ${(e as Error).message}`);
    }
    if (response.status === 404) {
      await response.body?.cancel().catch(() => undefined);
      return null;
    }
    if (!response.ok) throw new SourceError(`cannot fetch ${url.href}: HTTP ${response.status} ${response.statusText}`);
    return responseFile(response);
  }
  sub(folder: string): FileSource {
    return new UrlSource(new URL(`${folder}/`, this.base), this.fetchFile);
  }
}

class FolderSource implements FileSource {
  constructor(
    private readonly root: string,
    private readonly read: (path: string, signal?: AbortSignal) => Promise<Uint8Array>,
  ) {}
  describe(name: string): string {
    return `${this.root}/${name}`;
  }
  async open(name: string, signal?: AbortSignal): Promise<OpenedFile | null> {
    try {
      const bytes = await this.read(this.describe(name), signal);
      return { size: bytes.length, body: bytes };
    } catch (e) {
      throwIfAborted(signal);
      const code = (e as { code?: string }).code;
      // Deno's NotFound carries no code; its name says it.
      if (code === 'ENOENT' || code === 'ENOTDIR' || (e as Error).name === 'NotFound') return null;
      throw new SourceError(`cannot read ${this.describe(name)}: ${code ?? (e as Error).message}`);
    }
  }
  sub(folder: string): FileSource {
    return new FolderSource(`${this.root}/${folder}`, this.read);
  }
}

const URL_SCHEME = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;

/** The FileSource a ModelSource names. */
export function fileSource(source: ModelSource, options: SourceOptions = {}): FileSource {
  const { readFile, fileUrlToPath } = host();
  const fetchFile = options.fetch ?? ((url: URL, init?: { signal?: AbortSignal }) => globalThis.fetch(url, init));
  if (source instanceof URL || (typeof source === 'string' && URL_SCHEME.test(source))) {
    const url = new URL(String(source));
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    if (url.protocol === 'file:' && readFile && fileUrlToPath)
      return new FolderSource(fileUrlToPath(url).replace(/\/+$/, ''), readFile);
    return new UrlSource(url, fetchFile);
  }
  if (typeof source === 'string') {
    if (source === '') throw new InputError('the model source is an empty string');
    if (readFile) return new FolderSource(source.replace(/(.)\/+$/, '$1'), readFile);
    // No file system (a browser page): a relative string is a URL relative to the page.
    const base = (globalThis as { location?: { href: string } }).location?.href;
    if (!base) throw new InputError(`${source}: this runtime has no file system; pass a URL or a map of file bytes`);
    const url = new URL(source, base);
    if (!url.pathname.endsWith('/')) url.pathname += '/';
    return new UrlSource(url, fetchFile);
  }
  if (source instanceof Map || (typeof source === 'object' && source !== null)) {
    const entries = source instanceof Map ? [...source.entries()] : Object.entries(source);
    return new MapSource(new Map(entries.map(([name, bytes]) => [normalizeName(name), bytes])));
  }
  throw new InputError(`a model source is a folder path, a URL or a map of file names to bytes; got ${typeof source}`);
}

/** Reads an opened file whole (configs; small). */
export async function readAll(file: OpenedFile, signal?: AbortSignal): Promise<Uint8Array> {
  if (file.body instanceof Uint8Array) return file.body;
  const chunks: Uint8Array[] = [];
  let length = 0;
  const reader = file.body.getReader();
  try {
    for (;;) {
      throwIfAborted(signal);
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      length += value.length;
    }
  } finally {
    reader.releaseLock();
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** A JSON file of the source, or null when the source has no such file. */
export async function readJson(
  source: FileSource,
  name: string,
  signal?: AbortSignal,
  parse: (text: string) => unknown = JSON.parse,
): Promise<unknown> {
  const file = await source.open(name, signal);
  if (!file) return null;
  const text = new TextDecoder().decode(await readAll(file, signal));
  try {
    return parse(text);
  } catch (e) {
    throw new ConfigError(`${source.describe(name)}: ${(e as Error).message}`);
  }
}
