export { camelCase } from "./case";
export { parseQuery } from "./query";
export { range } from "./range";
