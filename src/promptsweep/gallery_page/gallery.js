// The gallery page: lists the pairs of data.js (window.GALLERY_DATA) with
// filters, sorting, and j/k or arrow keys to step through them.
"use strict";

(() => {
  const data = window.GALLERY_DATA;
  const pairs = data.pairs;
  const CAPTIONS = { edge: "edge map", baseline: "baseline", variant: "variant", ssim: "SSIM map" };
  const NEXT_KEYS = new Set(["j", "ArrowDown", "ArrowRight"]);
  const PREVIOUS_KEYS = new Set(["k", "ArrowUp", "ArrowLeft"]);

  const controls = {
    image: document.getElementById("image"),
    prompt: document.getElementById("prompt"),
    seed: document.getElementById("seed"),
    sort: document.getElementById("sort"),
    direction: document.getElementById("direction"),
  };
  const list = document.getElementById("pairs");
  const count = document.getElementById("count");

  const articles = new Map(); // pair index -> its <article>, built when first shown
  let shown = []; // indices of the pairs shown, in the order shown
  let current = -1; // index of the current pair, -1 when none is shown

  const isMissing = (value) => value === null || value === undefined || Number.isNaN(value);

  function formatNumber(value) {
    if (isMissing(value)) return "–";
    if (value === Infinity) return "∞";
    if (value === -Infinity) return "−∞";
    if (Number.isInteger(value)) return String(value);
    return value.toFixed(Math.abs(value) >= 10 ? 2 : 3);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const effect = (pair) => (isMissing(pair.values.ssim) ? null : 1 - pair.values.ssim);

  function meanEffectByPrompt() {
    const sums = new Map();
    for (const pair of pairs) {
      const value = effect(pair);
      if (isMissing(value)) continue;
      const [total, n] = sums.get(pair.prompt_id) || [0, 0];
      sums.set(pair.prompt_id, [total + value, n + 1]);
    }
    return new Map([...sums].map(([prompt, [total, n]]) => [prompt, total / n]));
  }

  // Sort keys by the value of the sort menu; "table" keeps the table's order.
  function sortKeys() {
    const keys = new Map();
    if (data.metrics.includes("ssim")) {
      const promptEffect = meanEffectByPrompt();
      keys.set("prompt-effect", ["prompts by mean effect (1 − SSIM)", (pair) => promptEffect.get(pair.prompt_id)]);
      keys.set("effect", ["effect (1 − SSIM)", effect]);
    }
    for (const metric of data.metrics) {
      keys.set(`metric:${metric}`, [metric, (pair) => pair.values[metric]]);
    }
    return keys;
  }
  const SORT_KEYS = sortKeys();

  function fillSelect(select, values) {
    for (const [value, label] of values) {
      select.append(new Option(label, value));
    }
  }

  function distinct(field) {
    return [...new Set(pairs.map((pair) => String(pair[field])))].map((value) => [value, value]);
  }

  function pictureFigure(pair, role) {
    const [thumbnail, full] = pair.pictures[role];
    const link = element("a");
    link.href = full;
    link.target = "_blank";
    const image = element("img");
    image.loading = "lazy"; // before src, so that off-screen thumbnails wait
    image.decoding = "async";
    image.alt = `${CAPTIONS[role]}, ${pair.image_id}, ${pair.prompt_id}, seed ${pair.seed}`;
    image.src = thumbnail;
    link.append(image);
    const figure = element("figure");
    figure.append(link, element("figcaption", "", CAPTIONS[role]));
    return figure;
  }

  function buildArticle(index) {
    const pair = pairs[index];
    const article = element("article", "pair");
    article.dataset.index = String(index);
    const heading = [pair.image_id, `${pair.prompt_id} (${pair.kind})`, `seed ${pair.seed}`];
    if (!isMissing(pair.dose)) heading.push(`dose ${pair.dose}`);
    article.append(element("h2", "", heading.join(" · ")));

    const pictures = element("div", "pictures");
    pictures.append(...Object.keys(CAPTIONS).map((role) => pictureFigure(pair, role)));
    const values = element("dl", "values");
    for (const metric of data.metrics) {
      values.append(element("dt", "", metric), element("dd", "", formatNumber(pair.values[metric])));
    }
    article.append(pictures, values);
    if (pair.note) article.append(element("p", "note", `excluded: ${pair.note}`));
    article.addEventListener("click", () => setCurrent(index, false));
    return article;
  }

  function articleOf(index) {
    if (!articles.has(index)) articles.set(index, buildArticle(index));
    return articles.get(index);
  }

  function matches(pair) {
    return (
      (!controls.image.value || pair.image_id === controls.image.value) &&
      (!controls.prompt.value || pair.prompt_id === controls.prompt.value) &&
      (!controls.seed.value || String(pair.seed) === controls.seed.value)
    );
  }

  // Missing values go last in either direction; ties keep the table's order.
  function compareBy(key, descending) {
    return (a, b) => {
      const x = key(pairs[a]);
      const y = key(pairs[b]);
      const missingX = isMissing(x);
      const missingY = isMissing(y);
      if (missingX || missingY) return missingX - missingY || a - b;
      if (x === y) return a - b;
      return (x < y) === descending ? 1 : -1;
    };
  }

  function setCurrent(index, scroll) {
    if (current >= 0) {
      const previous = articleOf(current);
      previous.classList.remove("current");
      previous.removeAttribute("aria-current");
    }
    current = index;
    if (current < 0) return;
    const article = articleOf(current);
    article.classList.add("current");
    article.setAttribute("aria-current", "true");
    if (scroll) article.scrollIntoView({ block: "nearest" });
  }

  function render() {
    shown = pairs.map((_, index) => index).filter((index) => matches(pairs[index]));
    const sort = SORT_KEYS.get(controls.sort.value);
    if (sort) shown.sort(compareBy(sort[1], controls.direction.value === "descending"));
    const fragment = document.createDocumentFragment();
    fragment.append(...shown.map(articleOf));
    list.replaceChildren(fragment);
    count.textContent = String(shown.length);
    // The current pair stays current while it is shown.
    setCurrent(shown.includes(current) ? current : shown.length ? shown[0] : -1, false);
  }

  function step(offset) {
    if (!shown.length) return;
    const position = Math.min(Math.max(shown.indexOf(current) + offset, 0), shown.length - 1);
    setCurrent(shown[position], true);
  }

  function onKey(event) {
    // Keys typed into a menu (arrow keys, type-ahead) are the menu's.
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target instanceof Element && event.target.closest("select, input, textarea")) return;
    const offset = NEXT_KEYS.has(event.key) ? 1 : PREVIOUS_KEYS.has(event.key) ? -1 : 0;
    if (!offset) return;
    event.preventDefault();
    step(offset);
  }

  function showColorbar() {
    const colorbar = data.colorbar;
    document.getElementById("colorbar").style.background = `linear-gradient(to right, ${colorbar.stops.join(", ")})`;
    document.getElementById("colorbar-low").textContent = `≤ ${colorbar.range[0]}`;
    document.getElementById("colorbar-high").textContent = String(colorbar.range[1]);
    document.getElementById("colorbar-label").textContent = `(${colorbar.label})`;
  }

  document.documentElement.style.setProperty("--thumb", `${data.thumbnail_side}px`);
  document.getElementById("total").textContent = String(pairs.length);
  fillSelect(controls.image, distinct("image_id"));
  fillSelect(controls.prompt, distinct("prompt_id"));
  fillSelect(controls.seed, distinct("seed"));
  fillSelect(controls.sort, [...SORT_KEYS].map(([value, [label]]) => [value, label]));
  showColorbar();
  for (const control of Object.values(controls)) control.addEventListener("change", render);
  document.addEventListener("keydown", onKey);
  render();

  // Ready once the first render has been painted: the frame after it is drawn.
  requestAnimationFrame(() =>
    setTimeout(() => {
      performance.mark("gallery-ready");
      document.documentElement.dataset.ready = "true";
    }),
  );
})();
