/**
 * @module core/agent/sse
 * A Server-Sent Events parser (the WHATWG event-stream format) fed with text chunks exactly as
 * they arrive: a line, a CRLF, even a multi-byte character may be split across chunks (decode
 * with a streaming TextDecoder before pushing). Comment lines (":...") are keep-alives and only
 * counted; `data:` lines of one event are joined with "\n"; an event is dispatched on a blank
 * line. A line longer than `maxLineBytes` poisons only the event it belongs to: it is counted as
 * malformed and skipped, so a broken server cannot make the agent buffer without bound.
 */

export interface SseEvent {
  /** "message" when the event had no `event:` field. */
  event: string;
  data: string;
  id?: string;
}

export interface SseCounters {
  events: number;
  comments: number;
  /** Events dropped because a line was too long. */
  oversized: number;
}

export class SseParser {
  readonly counters: SseCounters = { events: 0, comments: 0, oversized: 0 };
  #buffer = "";
  /** The previous chunk ended in "\r": a "\n" starting the next one belongs to that line end. */
  #pendingCr = false;
  #event = "";
  #data: string[] = [];
  #id: string | undefined;
  #hasData = false;
  #poisoned = false;
  readonly #maxLine: number;

  constructor(options: { maxLineBytes?: number } = {}) {
    this.#maxLine = options.maxLineBytes ?? 4 * 1024 * 1024;
  }

  /** Feeds one chunk; returns the events it completed, in order. */
  push(chunk: string): SseEvent[] {
    const out: SseEvent[] = [];
    let text = chunk;
    if (this.#pendingCr && text.startsWith("\n")) text = text.slice(1);
    this.#pendingCr = false;
    this.#buffer += text;
    let start = 0;
    for (;;) {
      const cr = this.#buffer.indexOf("\r", start);
      const lf = this.#buffer.indexOf("\n", start);
      let end: number;
      if (cr < 0 && lf < 0) break;
      if (cr < 0 || (lf >= 0 && lf < cr)) end = lf;
      else end = cr;
      const line = this.#buffer.slice(start, end);
      if (this.#buffer[end] === "\r") {
        if (end + 1 < this.#buffer.length) {
          start = this.#buffer[end + 1] === "\n" ? end + 2 : end + 1;
        } else {
          start = end + 1;
          this.#pendingCr = true;
        }
      } else {
        start = end + 1;
      }
      this.#line(line, out);
    }
    this.#buffer = this.#buffer.slice(start);
    if (this.#buffer.length > this.#maxLine) {
      this.#buffer = "";
      this.#poisoned = true;
    }
    return out;
  }

  #line(line: string, out: SseEvent[]): void {
    if (line === "") {
      if (this.#poisoned) {
        this.counters.oversized++;
      } else if (this.#hasData) {
        const event: SseEvent = { event: this.#event === "" ? "message" : this.#event, data: this.#data.join("\n") };
        if (this.#id !== undefined) event.id = this.#id;
        this.counters.events++;
        out.push(event);
      }
      this.#event = "";
      this.#data = [];
      this.#hasData = false;
      this.#id = undefined;
      this.#poisoned = false;
      return;
    }
    if (line.startsWith(":")) {
      this.counters.comments++;
      return;
    }
    if (line.length > this.#maxLine) {
      this.#poisoned = true;
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.#event = value;
        break;
      case "data":
        this.#data.push(value);
        this.#hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) this.#id = value;
        break;
      default:
        // "retry" and unknown fields are ignored, as the spec says.
        break;
    }
  }
}
